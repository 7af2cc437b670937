//! `ocx tunnel`: keep a local port forwarded to an instance on another host, until Ctrl-C.

use std::time::Duration;

use anyhow::Result;

use crate::cli::TunnelArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::remote::{self, Host};
use crate::{output, process, record};

pub fn run(home: &Home, args: TunnelArgs, host: &Host) -> Result<()> {
    let records = host.records(home)?;
    let mut r = record::resolve(&records, &args.instance)?.clone();
    process::install_interrupt_handler();
    let _forward = remote::reach(home, Some(host), &mut r)?;
    let _tunnel = remote::Tunnel::open(home, host, &r)?;
    output::line(&r.url)?;
    output::note(format_args!(
        "forwarding {} to {} on host {} until Ctrl-C; `ocx url {}:{} --with-credentials` prints its credentials",
        r.url,
        r.label(),
        host.label(),
        host.label(),
        r.label()
    ));
    while !process::interrupted() {
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(anyhow::anyhow!(Failure::silent(code::INTERRUPTED)))
}
