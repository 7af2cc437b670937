//! `ocx service install|uninstall|status`: the per-user unit that runs `ocx resurrect` at
//! boot or login (see `crate::service`).

use anyhow::{Context, Result};

use crate::cli::{ServiceArgs, ServiceCommand, ServiceManager, ServiceManagerArgs};
use crate::home::Home;
use crate::output;
use crate::process::{self, BootManager};
use crate::service::{self, Manager, Unit};

pub fn run(home: &Home, args: ServiceArgs) -> Result<()> {
    match args.command {
        ServiceCommand::Install(install) => {
            let unit = unit(home, &install.manager)?;
            if install.print {
                match &unit.path {
                    Some(path) => output::note(format_args!("# {}", path.display())),
                    None if unit.manager == Manager::TaskScheduler => output::note(format_args!(
                        "# schtasks {}",
                        shell_words(&service::schtasks_create(&unit.name, &unit.text))
                    )),
                    None => output::note("# a line for `crontab -e`"),
                }
                return Ok(output::line(unit.text.trim_end())?);
            }
            if unit.manager == Manager::Cron {
                // Said on stderr; the line on stdout, for `>> crontab` in scripts.
                output::line(&unit.text)?;
                return Err(service::no_manager(&unit));
            }
            let installed = service::install(unit)?;
            let unit = &installed.unit;
            let place = unit.path.as_ref().map_or(unit.name.clone(), |p| p.display().to_string());
            output::line(format_args!(
                "installed {place}: runs `ocx resurrect` for {} at boot or login",
                home.root().display()
            ))?;
            if let Some(hint) = &installed.hint {
                output::note(format_args!("hint: {hint}"));
            }
            Ok(())
        }
        ServiceCommand::Uninstall(args) => {
            let unit = unit(home, &args)?;
            if service::uninstall(&unit)? {
                output::line(format_args!(
                    "uninstalled {}",
                    unit.path.as_ref().map_or(unit.name.clone(), |p| p.display().to_string())
                ))?;
            } else {
                output::line("not installed: nothing to do")?;
            }
            Ok(())
        }
        ServiceCommand::Status(args) => {
            let unit = unit(home, &args)?;
            if unit.manager == Manager::Cron {
                output::line(
                    "no per-user service manager here; ocx cannot tell whether your crontab runs `ocx resurrect`",
                )?;
                return Ok(());
            }
            let place = unit.path.as_ref().map_or(unit.name.clone(), |p| p.display().to_string());
            match service::installed(&unit) {
                true => output::line(format_args!("installed: {place}"))?,
                false => output::line(format_args!("not installed (`ocx service install` would write {place})"))?,
            }
            if unit.manager == Manager::Systemd && service::linger() == Some(false) {
                output::note(
                    "hint: lingering is off: the unit runs at login, not at boot; `loginctl enable-linger` changes that",
                );
            }
            Ok(())
        }
    }
}

/// The unit for this ocx and this home, for the manager asked for or this system's.
fn unit(home: &Home, args: &ServiceManagerArgs) -> Result<Unit> {
    let manager = match args.manager {
        Some(ServiceManager::Systemd) => Manager::Systemd,
        Some(ServiceManager::Launchd) => Manager::Launchd,
        Some(ServiceManager::TaskScheduler) => Manager::TaskScheduler,
        Some(ServiceManager::Cron) => Manager::Cron,
        None => match process::boot_manager() {
            BootManager::Systemd => Manager::Systemd,
            BootManager::Launchd => Manager::Launchd,
            BootManager::TaskScheduler => Manager::TaskScheduler,
            BootManager::None => Manager::Cron,
        },
    };
    let exe = std::env::current_exe().context("cannot find this ocx's path")?;
    let exe = dunce::canonicalize(&exe).unwrap_or(exe);
    service::unit(manager, &exe, home.root())
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shlex::try_quote(w).map_or_else(|_| w.clone(), |q| q.into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}
