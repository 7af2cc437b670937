//! `ocx install-opencode`: install the opencode ocx is tested with into ocx's own cache
//! directory (`instance::install`), and say where and which version.

use anyhow::Result;
use serde_json::json;

use crate::cli::InstallOpencodeArgs;
use crate::instance::install;
use crate::{output, process};

pub fn run(args: InstallOpencodeArgs) -> Result<()> {
    process::install_interrupt_handler();
    let installed = install::install()?;
    if args.json {
        output::print_json(&json!({
            "version": installed.version,
            "path": installed.binary,
            "installed": installed.fresh,
        }))?;
    } else if installed.fresh {
        output::line(format_args!(
            "installed opencode {} at {} (ocx uses it from now on)",
            installed.version,
            installed.binary.display()
        ))?;
    } else {
        output::line(format_args!("opencode {} is installed at {}", installed.version, installed.binary.display()))?;
    }
    Ok(())
}
