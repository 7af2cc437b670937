//! The commands that set up and check the machine: `doctor`, `install-opencode`.

use clap::Args;

/// Check the whole setup and say what to fix
///
/// Each check is one line, ✓ or ✗, and for ✗ what to do: opencode (found where, which
/// version, supported); a model configured for the current directory (asked of a running
/// instance that serves it, else read from opencode's config files, saying which); the home
/// and its files this user's and private; every record readable (none corrupt, refused or
/// written by a newer ocx); no dead instance's port still bound; ssh, for --host; with
/// --hosts, every named host reachable with the same ocx; the service manager
/// `ocx service install` would use (a systemd user manager and lingering, launchd, or the
/// Task Scheduler); git, for --worktree.
///
/// It changes nothing. Exit 0 when everything the basics need (opencode, a model, the home,
/// the records) is fine, 1 otherwise; the other checks only say what their commands need.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx doctor                 check this machine, and the model for the current directory
  ocx doctor --hosts         also reach every host of `ocx host ls` (10 s each at most)
  ocx doctor --json | jq '.checks[] | select(.ok | not)'   what failed, for scripts")]
pub struct DoctorArgs {
    /// Also reach every named host over ssh and check that it runs this version of ocx
    #[arg(long)]
    pub hosts: bool,

    /// Print the checks as one JSON document: `ok` and `checks` (each with `check`, `ok`,
    /// `basic`, `detail` and, when it failed, `hint`)
    #[arg(long)]
    pub json: bool,
}

/// Install the opencode ocx is tested with, for ocx alone
///
/// Installs opencode-ai at the version ocx is tested with from the npm registry (with the
/// system's npm) into ocx's own cache directory (`~/.cache/ocx/opencode/VERSION` on Linux),
/// never a global npm prefix, and never on PATH. ocx finds it after --opencode,
/// $OCX_OPENCODE, PATH and ~/.opencode/bin, and uses it instead of an opencode on PATH of a
/// major version it does not speak. npm installs into a temp directory first, renamed into
/// place only once it works: a failed or interrupted install leaves nothing. Does nothing
/// when it is installed already. `ocx start --install-opencode` does the same when it finds
/// no opencode.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ocx install-opencode         install it (about 350 MB), or say where it is
  ocx install-opencode --json  {\"version\", \"path\", \"installed\"} for scripts")]
pub struct InstallOpencodeArgs {
    /// Print what was installed as JSON: `version`, `path`, and `installed` (false when it
    /// was there already)
    #[arg(long)]
    pub json: bool,
}
