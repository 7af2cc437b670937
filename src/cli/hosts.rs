//! The commands for other machines: host (the named hosts) and tunnel.

use clap::{Args, Subcommand};

/// Hosts to reach over ssh: add, list and remove their names
///
/// A host is reached with the system's `ssh` ($OCX_SSH overrides it), so ~/.ssh/config,
/// agents, keys and ProxyJump work as for any ssh command; it must log in without a prompt
/// (batch mode). One connection per host is shared by the commands that follow it within a
/// minute. The host needs the same version of ocx; --ocx says where it is when it is not on
/// the PATH of a non-interactive ssh session. The names are kept in ocx's config directory
/// (hosts.json, mode 0600).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx host add box ssh://me@box.example --ocx '~/.cargo/bin/ocx'
  ocx --host box start --name api       start an instance on box
  ocx run box:api \"explain main.rs\"     prompt it (through a forwarded port)
  ocx ls --all-hosts                    instances here and on every host")]
pub struct HostArgs {
    #[command(subcommand)]
    pub command: HostCommand,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Add a host (or change the one of that name)
    Add {
        /// The name to use in `--host NAME` and `NAME:instance`
        name: String,
        /// ssh://[user@]host[:port]
        url: String,
        /// The ocx binary on the host [default: ocx on its PATH]
        #[arg(long, value_name = "PATH")]
        ocx: Option<String>,
    },
    /// List the hosts
    #[command(visible_alias = "list")]
    Ls {
        /// Print a JSON array
        #[arg(long)]
        json: bool,
    },
    /// Remove hosts (their instances keep running there)
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Forward a port to an instance on another host, until Ctrl-C
///
/// Prints a URL on this machine's loopback that reaches the instance's server through the
/// host's shared ssh connection; while it runs, `ocx url HOST:INSTANCE` prints it too (with
/// --with-credentials, the password as well), for curl, editors and `opencode attach`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx tunnel box:api &
  curl -su \"$(ocx url box:api --with-credentials | sed 's|.*//||; s|@.*||')\" \"$(ocx url box:api)/global/health\"")]
pub struct TunnelArgs {
    /// The instance: HOST:INSTANCE, or INSTANCE with --host
    pub instance: String,
}
