//! `ocx tunnel`: keep a local port forwarded to an instance on another host, until Ctrl-C.

use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::cli::TunnelArgs;
use crate::error::{Failure, code};
use crate::home::Home;
use crate::remote::{self, Host};
use crate::{output, process, record};

pub fn run(home: &Home, args: TunnelArgs, host: &Host) -> Result<()> {
    let records = host.records(home)?;
    let mut r = record::resolve(&records, &args.instance)?.clone();
    process::install_interrupt_handler();
    let mut forward = remote::reach(home, Some(host), &mut r, true)?.expect("a host's instance is forwarded");
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
        // Ctrl-C at the terminal reaches its ssh too: that is not a lost connection.
        if !forward.alive() && !interrupted_soon() {
            return Err(anyhow!(
                Failure::new(code::FAILED, format!("the ssh connection to host {} ended", host.label()))
                    .hint("open the tunnel again")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(anyhow!(Failure::silent(code::INTERRUPTED)))
}

/// Whether Ctrl-C arrives within a moment (its signal may reach ssh first).
fn interrupted_soon() -> bool {
    std::thread::sleep(Duration::from_millis(200));
    process::interrupted()
}
