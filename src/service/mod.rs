//! `ocx service`: the per-user unit that runs `ocx resurrect` at boot or login — a systemd
//! user unit, a LaunchAgent, a Task Scheduler task, or (where there is no such manager) the
//! `@reboot` crontab line to add by hand. Each is rendered here as plain text, so every
//! platform's is unit-tested on any; installing runs the manager's own tool. Never root.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow};

use crate::error::{Failure, code};
use crate::home;

/// Who runs `ocx resurrect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
    TaskScheduler,
    Cron,
}

/// The unit for one home: what it runs, what it is called, and its text.
pub struct Unit {
    pub manager: Manager,
    /// `ocx-resurrect.service`, `dev.ocx.resurrect.plist`, the task's name, or none for cron.
    pub name: String,
    /// Where the unit file goes (None: the task scheduler and cron keep their own).
    pub path: Option<PathBuf>,
    /// The unit file, the `schtasks` command line, or the crontab line.
    pub text: String,
}

/// The unit `manager` would get to run `exe resurrect` for `home`.
pub fn unit(manager: Manager, exe: &Path, home: &Path) -> Result<Unit> {
    let suffix = suffix(home);
    Ok(match manager {
        Manager::Systemd => {
            let name = format!("ocx-resurrect{suffix}.service");
            let dir = dirs::config_dir().context("cannot tell where systemd user units go; set HOME")?;
            Unit { manager, path: Some(dir.join("systemd/user").join(&name)), text: systemd_unit(exe, home), name }
        }
        Manager::Launchd => {
            let label = format!("dev.ocx.resurrect{suffix}");
            let dir = dirs::home_dir().context("cannot find the home directory")?.join("Library/LaunchAgents");
            let path = dir.join(format!("{label}.plist"));
            Unit { manager, path: Some(path), text: launch_agent(exe, home, &label), name: label }
        }
        Manager::TaskScheduler => {
            let name = format!("ocx resurrect{suffix}");
            Unit { manager, path: None, text: task_command_line(exe, home), name }
        }
        Manager::Cron => Unit { manager, path: None, text: crontab_line(exe, home), name: "crontab".into() },
    })
}

/// What the unit runs: this ocx, for this home.
fn command(exe: &Path, home: &Path) -> [String; 4] {
    [exe.display().to_string(), "--home".into(), home.display().to_string(), "resurrect".into()]
}

/// Empty for the platform's default home, else `-` and a digest of the home's path: one unit
/// per home, each with a name of its own.
fn suffix(home: &Path) -> String {
    let default = dirs::state_dir().or_else(dirs::data_local_dir).map(|d| d.join("ocx"));
    if default.as_deref() == Some(home) {
        return String::new();
    }
    // FNV-1a: stable across ocx versions (std's hasher is not promised to be).
    let digest = home
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("-{:08x}", digest as u32)
}

/// A systemd user unit: one shot at boot (with lingering) or at login. `KillMode=process`:
/// the watchers `resurrect` starts are the instances', and must outlive this unit's run.
pub fn systemd_unit(exe: &Path, home: &Path) -> String {
    let exec: Vec<String> = command(exe, home).iter().map(|w| systemd_quote(w)).collect();
    format!(
        "# Written by `ocx service install`: brings back the ocx instances of {home} at boot or login.\n\
         [Unit]\n\
         Description=Bring back the OpenCode servers of ocx ({home})\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={exec}\n\
         RemainAfterExit=yes\n\
         KillMode=process\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        home = home.display(),
        exec = exec.join(" ")
    )
}

/// One word of an `ExecStart=` line: quoted when it must be; `%` and `$` escaped, which
/// systemd would expand.
fn systemd_quote(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/-_.:@+=,".contains(c));
    let quoted =
        if plain { word.to_string() } else { format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\"")) };
    quoted.replace('%', "%%").replace('$', "$$")
}

/// A LaunchAgent: run once at load (login). `AbandonProcessGroup`: launchd must not end the
/// watchers `resurrect` starts when it exits.
pub fn launch_agent(exe: &Path, home: &Path, label: &str) -> String {
    let args: String =
        command(exe, home).iter().map(|w| format!("        <string>{}</string>\n", xml_escape(w))).collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n\
         <dict>\n\
         \x20   <key>Label</key>\n\
         \x20   <string>{label}</string>\n\
         \x20   <key>ProgramArguments</key>\n\
         \x20   <array>\n\
         {args}\
         \x20   </array>\n\
         \x20   <key>RunAtLoad</key>\n\
         \x20   <true/>\n\
         \x20   <key>AbandonProcessGroup</key>\n\
         \x20   <true/>\n\
         </dict>\n\
         </plist>\n",
        label = xml_escape(label)
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The task's command line (`schtasks /TR`): each path in double quotes (Windows paths hold
/// spaces but never a `"`).
pub fn task_command_line(exe: &Path, home: &Path) -> String {
    format!("\"{}\" --home \"{}\" resurrect", exe.display(), home.display())
}

/// `schtasks` arguments that create the task: at logon of this user, replacing one of the
/// same name; no password stored, so no root and no prompt.
pub fn schtasks_create(name: &str, command_line: &str) -> Vec<String> {
    ["/Create", "/F", "/SC", "ONLOGON", "/RL", "LIMITED", "/TN", name, "/TR", command_line].map(String::from).to_vec()
}

/// The crontab line that does the same at boot. `%` is a newline to cron: escaped.
pub fn crontab_line(exe: &Path, home: &Path) -> String {
    let words: Vec<String> = command(exe, home)
        .iter()
        .map(|w| shlex::try_quote(w).map_or_else(|_| w.clone(), |q| q.into_owned()).replace('%', "\\%"))
        .collect();
    format!("@reboot {}", words.join(" "))
}

/// What `install` did, for the command to print.
pub struct Installed {
    pub unit: Unit,
    /// Something the user should do or know (lingering off).
    pub hint: Option<String>,
}

/// Install and enable the unit.
pub fn install(unit: Unit) -> Result<Installed> {
    let mut hint = None;
    match unit.manager {
        Manager::Systemd => {
            write_unit(&unit)?;
            run("systemctl", &["--user", "daemon-reload"])?;
            run("systemctl", &["--user", "enable", &unit.name])?;
            if linger() == Some(false) {
                hint = Some(
                    "lingering is off for this user: the unit runs at login, not at boot; \
                     `loginctl enable-linger` makes it run at boot"
                        .to_string(),
                );
            }
        }
        Manager::Launchd => {
            write_unit(&unit)?;
            let path = unit.path.as_ref().expect("a LaunchAgent has a path").display().to_string();
            // Replacing a loaded one: unload first (an error means it was not loaded).
            let _ = run("launchctl", &["unload", &path]);
            run("launchctl", &["load", "-w", &path])?;
        }
        Manager::TaskScheduler => {
            let args = schtasks_create(&unit.name, &unit.text);
            run("schtasks", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        Manager::Cron => return Err(no_manager(&unit)),
    }
    Ok(Installed { unit, hint })
}

/// Disable and remove the unit; Ok(false) when it was not installed.
pub fn uninstall(unit: &Unit) -> Result<bool> {
    match unit.manager {
        Manager::Systemd | Manager::Launchd => {
            let path = unit.path.as_ref().expect("a unit file has a path");
            if !path.exists() {
                return Ok(false);
            }
            if unit.manager == Manager::Systemd {
                let _ = run("systemctl", &["--user", "disable", &unit.name]);
            } else {
                let _ = run("launchctl", &["unload", &path.display().to_string()]);
            }
            std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
            if unit.manager == Manager::Systemd {
                let _ = run("systemctl", &["--user", "daemon-reload"]);
            }
            Ok(true)
        }
        Manager::TaskScheduler => {
            if !installed(unit) {
                return Ok(false);
            }
            run("schtasks", &["/Delete", "/F", "/TN", &unit.name])?;
            Ok(true)
        }
        Manager::Cron => Err(no_manager(unit)),
    }
}

/// Whether the unit is installed.
pub fn installed(unit: &Unit) -> bool {
    match (&unit.path, unit.manager) {
        (Some(path), _) => path.exists(),
        (None, Manager::TaskScheduler) => {
            Command::new("schtasks").args(["/Query", "/TN", &unit.name]).output().is_ok_and(|o| o.status.success())
        }
        (None, _) => false,
    }
}

/// Whether systemd keeps this user's manager running without a login (None: cannot tell).
pub fn linger() -> Option<bool> {
    let user = std::env::var("USER").ok()?;
    let out = Command::new("loginctl").args(["show-user", &user, "--property=Linger", "--value"]).output().ok()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// The error of a system without a manager ocx can install into, with the crontab line.
pub fn no_manager(unit: &Unit) -> anyhow::Error {
    anyhow!(
        Failure::new(
            code::FAILED,
            "this system has no per-user service manager ocx knows (systemd is not running here: a container?); nothing was installed"
        )
        .hint(format!("to run `ocx resurrect` at boot, add this line with `crontab -e`:\n  {}", unit.text))
    )
}

fn write_unit(unit: &Unit) -> Result<()> {
    let path = unit.path.as_ref().expect("a unit file has a path");
    let dir = path.parent().expect("a unit file has a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    home::write_atomic(path, unit.text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (is it installed?)"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(anyhow!(Failure::new(
            code::FAILED,
            format!("`{program} {}` failed: {}", args.join(" "), err.trim())
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
