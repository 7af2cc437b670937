//! Real OpenSSH servers on 127.0.0.1 as "other hosts": each `sshd` has its own port, host key
//! and ocx home (set for its sessions with `SetEnv`); one client key, a private known_hosts and
//! an ssh config with a `Host` entry per server, used through `OCX_SSH` (a wrapper that also
//! logs every ssh command line, to check that nothing secret is on one).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{TestEnv, wait_for};

const SSHD: &str = "/usr/sbin/sshd";

pub struct SshHosts {
    pub dir: PathBuf,
    /// The value for OCX_SSH.
    pub ssh: String,
    /// Every ssh command line ocx ran, one per line.
    pub argv_log: PathBuf,
    pub hosts: Vec<Sshd>,
    config: PathBuf,
    /// The ocx for `--ocx`: logs the command line of every remote ocx.
    pub ocx: PathBuf,
}

/// One sshd: a host named `name` in the ssh config.
pub struct Sshd {
    pub name: String,
    pub port: u16,
    pub ocx_home: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen is installed (scripts/test installs openssh)");
    assert!(status.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl SshHosts {
    /// Start one sshd per name, each a host of its own for `env`'s ocx.
    pub fn start(env: &TestEnv, names: &[&str]) -> SshHosts {
        assert!(Path::new(SSHD).is_file(), "{SSHD} is missing: scripts/test installs openssh-server");
        assert!(
            Path::new("/run/sshd").is_dir(),
            "/run/sshd (sshd's privilege separation directory) is missing: scripts/test creates it"
        );
        let dir = env.root.path().join("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("client_key");
        keygen(&key);
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        let user = user.trim();
        let mut config = String::new();
        let mut known = String::new();
        let mut hosts = Vec::new();
        for name in names {
            let host_dir = dir.join(name);
            std::fs::create_dir_all(&host_dir).unwrap();
            let host_key = host_dir.join("host_key");
            keygen(&host_key);
            let port = free_port();
            let pubkey = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
            let pubkey: Vec<&str> = pubkey.split_whitespace().take(2).collect();
            known.push_str(&format!("[127.0.0.1]:{port} {}\n", pubkey.join(" ")));
            config.push_str(&format!(
                "Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {}\n  \
                 IdentitiesOnly yes\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n",
                key.display(),
                dir.join("known_hosts").display()
            ));
            let ocx_home = host_dir.join("ocx-home");
            // What a login on this "host" gets: the test's user environment, its own ocx home.
            let mut probe = Command::new("true");
            env.apply_env(&mut probe);
            let mut vars: Vec<(String, String)> = probe
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
                .collect();
            vars.push(("OCX_HOME".into(), ocx_home.display().to_string()));
            vars.push(("OCX_OPENCODE".into(), env.opencode.display().to_string()));
            let set_env: Vec<String> = vars.iter().map(|(k, v)| format!("\"{k}={v}\"")).collect();
            std::fs::write(host_dir.join("authorized_keys"), std::fs::read(key.with_extension("pub")).unwrap())
                .unwrap();
            std::fs::write(
                host_dir.join("sshd_config"),
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
                     StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nAllowTcpForwarding local\nLogLevel VERBOSE\nSetEnv {}\n",
                    host_key.display(),
                    host_dir.join("authorized_keys").display(),
                    host_dir.join("sshd.pid").display(),
                    set_env.join(" ")
                ),
            )
            .unwrap();
            let mut sshd =
                Sshd { name: name.to_string(), port, ocx_home, log: host_dir.join("sshd.log"), child: None, env: vars };
            sshd.spawn(&host_dir);
            hosts.push(sshd);
        }
        std::fs::write(dir.join("known_hosts"), known).unwrap();
        let config_path = dir.join("ssh_config");
        std::fs::write(&config_path, config).unwrap();
        let argv_log = dir.join("ssh-argv.log");
        let wrapper = dir.join("ssh-wrapper");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec ssh -F '{}' \"$@\"\n",
                argv_log.display(),
                config_path.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // The ocx the hosts run, through a wrapper that logs its command lines there.
        let ocx = dir.join("ocx-wrapper");
        std::fs::write(
            &ocx,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
                dir.join("remote-argv.log").display(),
                env!("CARGO_BIN_EXE_ocx")
            ),
        )
        .unwrap();
        std::fs::set_permissions(&ocx, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        SshHosts { ssh: wrapper.display().to_string(), argv_log, hosts, config: config_path, dir, ocx }
    }

    pub fn host(&self, name: &str) -> &Sshd {
        self.hosts.iter().find(|h| h.name == name).unwrap()
    }

    pub fn host_mut(&mut self, name: &str) -> &mut Sshd {
        self.hosts.iter_mut().find(|h| h.name == name).unwrap()
    }

    /// Every ssh command line ocx ran so far.
    pub fn argv(&self) -> String {
        std::fs::read_to_string(&self.argv_log).unwrap_or_default()
    }

    /// The arguments of every ocx the hosts ran for ocx here, one line each.
    pub fn remote_argv(&self) -> String {
        std::fs::read_to_string(self.dir.join("remote-argv.log")).unwrap_or_default()
    }

    /// Close the shared connections ocx left open (`ControlPersist`).
    pub fn close_connections(&self, control_dir: &Path) {
        for h in &self.hosts {
            let _ = Command::new("ssh")
                .arg("-F")
                .arg(&self.config)
                .arg("-o")
                .arg(format!("ControlPath={}/%C", control_dir.display()))
                .args(["-O", "exit", &h.name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Sshd {
    fn spawn(&mut self, dir: &Path) {
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(dir.join("sshd_config"))
            .arg("-E")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let port = self.port;
        wait_for("sshd to listen", Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        self.child = Some(child);
    }

    /// How many times a client logged in (each is a full handshake).
    pub fn logins(&self) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().matches("Accepted publickey").count()
    }

    /// How many `ocx __remote` run on this host now (told apart by their OCX_HOME).
    pub fn remote_commands(&self) -> usize {
        let home = format!("OCX_HOME={}", self.ocx_home.display());
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.ends_with(b"__remote\0")))
            .filter(|e| {
                std::fs::read(e.path().join("environ"))
                    .is_ok_and(|v| v.split(|&b| b == 0).any(|kv| kv == home.as_bytes()))
            })
            .count()
    }

    /// The host goes away: its sshd and every connection it serves (not what runs detached).
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        for pid in connections(child.id()) {
            signal(pid, "KILL");
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The host stops answering while its connections stay open (a half-open link, as when a
    /// network drops without a reset): every sshd serving a connection is stopped (SIGSTOP),
    /// so the kernel still keeps TCP up but nothing replies. Continued when dropped.
    pub fn freeze(&self) -> Frozen {
        let listener = self.child.as_ref().expect("sshd runs").id();
        let pids = connections(listener);
        assert!(!pids.is_empty(), "host {} serves no connection to freeze", self.name);
        for &pid in &pids {
            signal(pid, "STOP");
        }
        Frozen(pids)
    }

    /// `ocx` run directly on this host (not over ssh), with its environment.
    pub fn ocx(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocx"));
        cmd.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

impl Drop for Sshd {
    /// End the host's instances (directly, as its own user would), then its sshd.
    fn drop(&mut self) {
        if self.ocx_home.exists() {
            let _ = self.ocx().args(["stop", "--all", "--force"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        self.kill();
    }
}

/// The direct children of `pid` (the connections an sshd serves).
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else { continue };
        if after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Every sshd below the listener `sshd`: each connection's monitor and its session process,
/// not what the sessions started.
fn connections(sshd: u32) -> Vec<u32> {
    let mut sshds = children(sshd);
    let mut i = 0;
    while i < sshds.len() {
        let below = children(sshds[i]);
        sshds.extend(
            below
                .into_iter()
                .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sshd")),
        );
        i += 1;
    }
    sshds
}

/// The sshd processes `Sshd::freeze` stopped; continued when dropped.
pub struct Frozen(Vec<u32>);

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in &self.0 {
            signal(pid, "CONT");
        }
    }
}

/// Send `sig` to a process found below a test's own sshd, while it is still an sshd.
fn signal(pid: u32, sig: &str) {
    if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sshd") {
        let _ = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
    }
}

/// Every process's command line on this machine, as one string per process.
pub fn all_command_lines() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect()
}
