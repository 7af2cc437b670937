//! The commands that print what is generated from these clap types: completion scripts and man
//! pages.

use std::path::PathBuf;

use clap::{Args, ValueEnum, ValueHint};

/// Print the shell completion script
///
/// The script asks ocx itself what to complete, so `ocx stop <TAB>` offers the instances that
/// exist right now. Load it from your shell's startup file:
///
///   bash:       source <(ocx completions bash)           (~/.bashrc)
///   zsh:        source <(ocx completions zsh)            (~/.zshrc)
///   fish:       ocx completions fish | source            (~/.config/fish/config.fish)
///   PowerShell: ocx completions powershell | Out-String | Invoke-Expression   ($PROFILE)
///   elvish:     eval (ocx completions elvish | slurp)    (~/.config/elvish/rc.elv)
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CompletionsArgs {
    /// The shell to print the script for
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
}

/// Write the man pages (ocx.1, ocx-start.1, …) into a directory
#[derive(Debug, Args)]
pub struct ManArgs {
    #[arg(value_hint = ValueHint::DirPath)]
    pub dir: PathBuf,
}
