//! `ocx man DIR` (hidden): the man pages, generated from the clap definitions, plus what
//! `--help` cannot carry: examples, files, environment, exit status. `scripts/generate` writes
//! them to `man/`; a test fails when the committed pages are stale.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_mangen::Man;

use crate::cli::{Cli, ManArgs};

/// The date the pages carry: the release date of the version in Cargo.toml (fixed, so that
/// generating the pages twice gives the same bytes).
const DATE: &str = "2026-11-21";

const FILES: &str = r#".TP
\fI$OCX_HOME/instances/<id>.json\fR
One record per instance (mode 0600, written atomically): PID and its start time, its watcher,
port, URL, credentials, directory, opencode binary, ocx's intent (starting, running, stopping),
and the watcher's restarts and the last exit.
.TP
\fI$OCX_HOME/logs/<id>.log\fR, \fI<id>.log.1\fR, \fI.2\fR, …
The server's output and the watcher's notes (\fB\-\-\- ocx: …\fR), each line with the time it
arrived. Before a line would take the log past \fBocx start \-\-log\-max\-size\fR the watcher
renames it to \fI<id>.log.1\fR (\fI.1\fR to \fI.2\fR, …) and starts a new one, keeping
\fB\-\-log\-max\-files\fR files in all: an instance's log never holds much more than the size
times the files (30 MiB by default). Kept after \fBocx stop\fR until \fBocx gc \-\-logs\fR.
.TP
\fI$OCX_HOME/status/<id>.json\fR
The watcher's observation of its instance (health, version, busy sessions, pending questions,
the answers it gave): written only by the watcher, read by \fBocx ls\fR, which then asks no
server; never trusted once the watcher is gone.
.TP
\fI$OCX_HOME/locks/\fR
Advisory locks: one for the whole store, one per instance while it starts or stops.
.TP
\fI$OCX_HOME/worktrees/<id>/<repo>\fR, \fI<id>.json\fR
The git worktree of an instance started with \fBocx start \-\-worktree\fR, and ocx's marker of
it (written before the worktree is added: a worktree without one is not ocx's, and \fBocx gc\fR
never touches it). Removed by \fBocx stop\fR and \fBocx gc\fR only when it has no uncommitted or
untracked changes; its branch only when it has no commits beyond its base.
.TP
\fI$OCX_HOME/data/<id>/opencode.db\fR
The database of an instance started with \fBocx start \-\-isolate\fR (its sessions). Kept after
\fBocx stop\fR until \fBocx gc \-\-logs\fR.
.TP
\fI$OCX_HOME/ssh/\fR
The control sockets of the shared ssh connections, one per host, each kept 60 s after the last
command (with a long \fIOCX_HOME\fR, a short private directory under \fI$XDG_RUNTIME_DIR\fR,
else \fI/tmp\fR, instead: used only when it is a real directory of this user with mode 0700).
.TP
\fI$OCX_HOME/tunnels/\fR
One file per open \fBocx tunnel\fR: the local URL of its instance and the credentials, which
\fBocx url\fR prints; a file counts only while its \fBocx tunnel\fR runs.
.TP
\fI<config dir>/ocx/hosts.json\fR
The named hosts of \fBocx host\fR (mode 0600): \fI~/.config/ocx/hosts.json\fR on Linux, the
platform's configuration directory elsewhere.
.PP
\fIOCX_HOME\fR defaults to the platform's state directory plus \fIocx\fR
(\fI~/.local/state/ocx\fR on Linux). It is created with mode 0700.
"#;

const ENVIRONMENT: &str = r#".TP
\fBOCX_HOME\fR
The state directory (as \fB\-\-home\fR).
.TP
\fBOCX_OPENCODE\fR
The opencode binary, when \fB\-\-opencode\fR is not given. Otherwise ocx looks for
\fIopencode\fR on \fBPATH\fR, then in \fI~/.opencode/bin\fR.
.TP
\fBOCX_HOST\fR
Run the command on that host (as \fB\-\-host\fR): a name from \fBocx host ls\fR, or
\fIssh://[user@]host[:port]\fR.
.TP
\fBOCX_SSH\fR
The command that reaches hosts in place of \fIssh\fR, split into words as a shell would
(e.g. \fIssh \-F ./ssh_config\fR); ocx adds its own options (batch mode, a connect timeout,
the shared connection) after them.
.TP
\fBOCX_INSTANCE_ID\fR, \fBOCX_HOME\fR (in the server's environment)
The marker. Every server is started with both set; every process it starts inherits them,
also the agent's shell commands that run in sessions of their own. \fBocx stop\fR and
\fBocx gc\fR find what belongs to an instance by this marker, and never signal a process
without it, nor one whose start time differs from the record's.
.TP
\fBOCX_ALERT\fR (in a \fB\-\-notify\fR command's environment)
Set instead of the marker, one value per alert: when the watcher ends the command (after
30 s, or as it exits), it ends every process carrying that value too.
.TP
\fBNO_COLOR\fR
When set and not empty, no colour in tables. Colour is also off when stdout is not a
terminal or \fBTERM\fR is \fIdumb\fR.
.TP
\fBCOMPLETE\fR
Set by the completion scripts when they ask ocx for candidates (see \fBocx\-completions\fR(1)).
"#;

const EXIT_STATUS: &str = r#".TP
\fB0\fR
Success.
.TP
\fB1\fR
Failure (a server that exited or failed to stop, an unreadable state directory, …).
.TP
\fB2\fR
Usage error.
.TP
\fB3\fR
No such instance, or a name or prefix that matches several.
.TP
\fB4\fR
Timed out (\fB\-\-timeout\fR, or a lock held too long by another ocx).
.TP
\fB130\fR, \fB143\fR, \fB129\fR
Interrupted by Ctrl\-C, SIGTERM or SIGHUP; what was under way was stopped or aborted first
(a prompt is aborted on the server, a server being started is stopped). \fBocx events\fR and
\fBocx logs \-f\fR end with 0: following is what they were asked to do until then.
"#;

pub fn run(args: ManArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let subcommands: Vec<clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect();
    let names: Vec<String> = subcommands.iter().map(page_name).collect();
    write_page(&args.dir, &cmd, &names)?;
    for sub in &subcommands {
        write_page(&args.dir, sub, &["ocx".to_string()])?;
    }
    Ok(())
}

fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name().unwrap_or(cmd.get_name()).to_string()
}

/// One page: clap_mangen's sections, then examples (from the command's after-help text),
/// and on the main page the files, environment and exit status.
fn write_page(dir: &Path, cmd: &clap::Command, see_also: &[String]) -> Result<()> {
    let man =
        Man::new(cmd.clone()).date(DATE).manual("ocx manual").source(format!("ocx {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let main = cmd.get_name() == "ocx";
    if main {
        man.render_subcommands_section(&mut page)?;
    }
    let mut extra = String::new();
    if let Some(examples) = cmd.get_after_help().map(|h| h.to_string()) {
        let lines: Vec<&str> = examples.lines().filter(|l| !l.trim().is_empty() && l.trim() != "Examples:").collect();
        extra.push_str(".SH EXAMPLES\n.nf\n");
        for line in lines {
            extra.push_str(&escape(line.trim_start()));
            extra.push('\n');
        }
        extra.push_str(".fi\n");
    }
    if main {
        for (title, body) in [("FILES", FILES), ("ENVIRONMENT", ENVIRONMENT), ("EXIT STATUS", EXIT_STATUS)] {
            extra.push_str(&format!(".SH \"{title}\"\n{body}"));
        }
    }
    let refs: Vec<String> = see_also.iter().map(|name| format!("\\fB{}\\fR(1)", name.replace('-', "\\-"))).collect();
    extra.push_str(&format!(".SH \"SEE ALSO\"\n{}\n", refs.join(",\n")));
    page.extend_from_slice(extra.as_bytes());
    man.render_version_section(&mut page)?;
    // clap_mangen puts `.br`, a blank line, `.br` before a list of possible values; mandoc
    // warns about a break next to a blank line, so say "a blank line" once, as `.sp`.
    let page = String::from_utf8(page)?.replace(".br\n\n.br\n", ".sp\n");
    let path = dir.join(format!("{}.1", page_name(cmd)));
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))
}

/// Text as roff: backslashes escaped, hyphens as minus signs, no line starting a request.
fn escape(line: &str) -> String {
    let text = line.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with('.') || text.starts_with('\'') { format!("\\&{text}") } else { text }
}
