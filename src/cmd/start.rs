//! `ocx start`: check the arguments, start the instances in parallel, print them.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow};

use crate::cli::{AnswerPolicy, LogLevel, RestartPolicy, StartArgs};
use crate::error::{Failure, code};
use crate::home::Home;
use crate::instance::install;
use crate::instance::launch::{self, Started};
use crate::instance::opencode::{self, Source};
use crate::instance::spawn::{self, PASSWORD_VAR, Plan};
use crate::instance::workspace::WorktreePlan;
use crate::record::{self, Supervision};
use crate::{output, parallel, process};

pub fn run(home: &Home, args: StartArgs) -> Result<()> {
    let plan = plan(home, &args)?;
    let names: Vec<Option<String>> = match &args.name {
        Some(name) if args.count == 1 => vec![Some(name.clone())],
        Some(name) => (1..=args.count).map(|i| Some(format!("{name}-{i}"))).collect(),
        None => vec![None; args.count as usize],
    };
    for name in names.iter().flatten() {
        record::check_name(name)?;
    }
    process::install_interrupt_handler();
    let spinner = output::Spinner::start(match names.len() {
        1 => "starting opencode".to_string(),
        n => format!("starting {n} opencode servers"),
    });
    let numbered: Vec<(Option<u32>, Option<String>)> =
        names.iter().enumerate().map(|(i, name)| ((names.len() > 1).then_some(i as u32 + 1), name.clone())).collect();
    let results =
        parallel::map(&numbered, names.len(), |(index, name)| launch::start(home, &plan, name.clone(), *index));
    drop(spinner);

    let mut started: Vec<Started> = Vec::new();
    let mut errors: Vec<anyhow::Error> = Vec::new();
    for result in results {
        match result {
            Ok(s) => started.push(s),
            Err(e) => errors.push(e),
        }
    }
    super::print_started(&started, args.json, "startup_ms", "HEALTHY IN")?;
    super::fail_with(errors, names.len() == 1)
}

/// What the arguments ask for, checked. (`ocx up` plans each instance of its file with it too,
/// through `cmd::start_plan`.)
pub(super) fn plan(home: &Home, args: &StartArgs) -> Result<Plan> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    if !dir.is_dir() {
        return Err(anyhow!(
            Failure::new(code::FAILED, format!("the directory {} does not exist", dir.display()))
                .hint("--dir names the directory the server serves; create it first")
        ));
    }
    let dir = dunce::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let env: BTreeMap<String, String> = args.env.iter().cloned().collect();
    let auth = !args.no_auth;
    if !auth && !spawn::is_loopback(&args.hostname) {
        return Err(anyhow!(
            Failure::new(
                code::USAGE,
                format!("--no-auth is refused with the non-loopback --hostname {}", args.hostname)
            )
            .hint("anyone who can reach that address could drive an agent that runs shell commands as you")
        ));
    }
    if !auth && env.contains_key(PASSWORD_VAR) {
        return Err(anyhow!(Failure::new(code::USAGE, format!("--no-auth conflicts with --env {PASSWORD_VAR}"))));
    }
    match args.port {
        Some(0) => {
            return Err(anyhow!(
                Failure::new(code::USAGE, "--port 0 is not a port").hint("leave --port out and ocx picks a free one")
            ));
        }
        Some(_) if args.count > 1 => {
            return Err(anyhow!(Failure::new(code::USAGE, "--port names one port; it cannot go with --count")));
        }
        _ => {}
    }
    // Checked before anything is created: git's refusals are the user's to fix.
    let worktree = args
        .worktree
        .as_ref()
        .map(|branch| WorktreePlan::check(&dir, branch.clone(), args.base.as_deref(), args.count))
        .transpose()?;
    // Last, once the arguments are known to be good: it may install opencode. A major version
    // ocx does not speak is refused before anything starts.
    let binary = opencode_binary(home, args, &env)?;
    Ok(Plan {
        binary,
        dir,
        hostname: args.hostname.clone(),
        port: args.port,
        auth,
        timeout: args.timeout,
        env,
        extra: args.extra.clone(),
        restart: match args.restart {
            RestartPolicy::No => record::RestartPolicy::No,
            RestartPolicy::OnFailure => record::RestartPolicy::OnFailure,
            RestartPolicy::Always => record::RestartPolicy::Always,
        },
        supervision: Supervision {
            log_max_size: args.log_max_size,
            log_max_files: args.log_max_files,
            health_interval_s: args.health_interval.as_secs().max(1),
            health_failures: args.health_failures,
            max_memory: args.max_memory,
            permission: args.permission.map(|p| match p {
                AnswerPolicy::Reject => "reject".to_string(),
                AnswerPolicy::Allow => "allow".to_string(),
            }),
            ask_timeout_s: args.permission.map(|_| args.ask_timeout.map_or(60, |t| t.as_secs().max(1))),
            notify: args.notify.clone().filter(|n| !n.trim().is_empty()),
        },
        log_level: Some(
            match args.log_level {
                LogLevel::Debug => "DEBUG",
                LogLevel::Info => "INFO",
                LogLevel::Warn => "WARN",
                LogLevel::Error => "ERROR",
            }
            .to_string(),
        ),
        project: None,
        worktree,
        setup: args.setup.clone(),
        isolate: args.isolate,
    })
}

/// The opencode to start: the one found (`opencode::locate`), else — also instead of one on
/// PATH of a major version ocx does not speak — ocx's own install, made now when
/// `--install-opencode` asks for it or the user at the terminal agrees.
fn opencode_binary(home: &Home, args: &StartArgs, env: &BTreeMap<String, String>) -> Result<std::path::PathBuf> {
    let refused = match opencode::locate(args.opencode.as_deref())? {
        Some((binary, source)) => match opencode::check_version(home, &binary, env) {
            Ok(_) => return Ok(binary),
            // One the user named is theirs to change.
            Err(err) if source.explicit() || source == Source::Ocx => return Err(err),
            Err(err) => Some(err),
        },
        None => None,
    };
    if refused.is_some()
        && let Some(own) = install::installed()
    {
        output::note(format!("using ocx's own opencode {} at {}", opencode::TESTED, own.display()));
        opencode::check_version(home, &own, env)?;
        return Ok(own);
    }
    let target =
        install::dir(opencode::TESTED).map_or_else(|| "ocx's cache directory".into(), |d| d.display().to_string());
    let agreed = args.install_opencode
        || (output::is_interactive() && {
            let why = match &refused {
                Some(err) => format!("{err:#}"),
                None => "opencode is not installed".to_string(),
            };
            output::note(why);
            output::confirm(&format!("install opencode {} from the npm registry into {target}?", opencode::TESTED))
                .context("cannot read the answer")?
        });
    if !agreed {
        return Err(refused
            .unwrap_or_else(|| opencode::find_opencode(args.opencode.as_deref()).expect_err("nothing was found")));
    }
    // After the question (a Ctrl-C at it simply ends ocx): from here on, Ctrl-C ends npm and
    // removes what it installed so far.
    process::install_interrupt_handler();
    let installed = install::install()?;
    if installed.fresh {
        output::note(format!(
            "installed opencode {} at {} (ocx uses it from now on)",
            installed.version,
            installed.binary.display()
        ));
    }
    opencode::check_version(home, &installed.binary, env)?;
    Ok(installed.binary)
}
