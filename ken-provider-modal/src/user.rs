//! Exec as another user.
//!
//! The task command router has no user field: every command starts as the
//! sandbox's own user, normally root. To run one as another user, Ken first
//! looks the user up inside the sandbox (`id`, `/etc/passwd`), once per sandbox
//! task and user, then prefixes the command with
//! `setpriv --reuid=UID --regid=GID --init-groups --`. `setpriv` comes with
//! util-linux, which every Debian and Ubuntu image has. It replaces itself with
//! the command, so the process keeps the exec's process group and a kill still
//! reaches it.
//!
//! Like `docker exec --user`, a uid that is not in `/etc/passwd` runs with group
//! 0 and no supplementary groups, and `HOME` becomes the user's home directory
//! unless the exec sets `HOME` itself.

use std::collections::HashMap;
use std::sync::Mutex;

use ken_core::{Error, Result, SandboxName};

use crate::ModalProvider;

/// Maximum length of an accepted user name or uid.
const MAX_USER_LEN: usize = 64;

/// A user looked up inside a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecUser {
    uid: u32,
    gid: u32,
    /// Whether `/etc/passwd` has the user, so that `--init-groups` can read its
    /// groups.
    in_passwd: bool,
    /// The user's home directory, when `/etc/passwd` names one.
    home: Option<String>,
}

impl ExecUser {
    /// Returns the `setpriv` words that go before the command.
    pub(crate) fn command_prefix(&self) -> Vec<String> {
        let groups = if self.in_passwd { "--init-groups" } else { "--clear-groups" };
        vec![
            "setpriv".to_owned(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            groups.to_owned(),
            "--".to_owned(),
        ]
    }

    /// Returns the home directory the command gets as `HOME`.
    pub(crate) fn home(&self) -> Option<&str> {
        self.home.as_deref()
    }
}

/// Users already looked up, by task id and user.
#[derive(Default)]
pub(crate) struct UserCache {
    users: Mutex<HashMap<(String, String), ExecUser>>,
}

impl UserCache {
    fn get(&self, task: &str, user: &str) -> Option<ExecUser> {
        self.lock().get(&(task.to_owned(), user.to_owned())).cloned()
    }

    fn insert(&self, task: &str, user: &str, found: ExecUser) {
        self.lock().insert((task.to_owned(), user.to_owned()), found);
    }

    /// Removes the cached users of a task that has ended.
    pub(crate) fn forget_task(&self, task: &str) {
        self.lock().retain(|(t, _), _| t != task);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), ExecUser>> {
        self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Checks the form of a user given to exec, before anything runs.
pub(crate) fn check_user(user: &str) -> Result<()> {
    let valid = !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '$'));
    if valid {
        return Ok(());
    }
    let reason = if user.contains(':') {
        "Modal execs take a user name or uid; a group (user:group) is not supported, the user's own groups apply"
    } else {
        "use a user name or uid of the sandbox's image, such as `postgres` or `1000`"
    };
    Err(Error::invalid("exec user", user, reason))
}

/// Shell script that looks up the user given as `$1`. It prints
/// `ok UID GID IN_PASSWD HOME`, `unknown`, or `no-setpriv`.
const LOOKUP_SCRIPT: &str = r#"u=$1
command -v setpriv >/dev/null 2>&1 || { echo no-setpriv; exit 0; }
if uid=$(id -u "$u" 2>/dev/null); then
  gid=$(id -g "$u" 2>/dev/null) || gid=0
  in=0; home=
  while IFS=: read -r _ _ id _ _ dir _; do
    if [ "$id" = "$uid" ]; then in=1; home=$dir; break; fi
  done < /etc/passwd
  echo "ok $uid $gid $in $home"
else
  case $u in
    *[!0-9]*) echo unknown ;;
    *) echo "ok $u 0 0 " ;;
  esac
fi"#;

/// Parses the output of [`LOOKUP_SCRIPT`].
fn parse_lookup(user: &str, sandbox: &SandboxName, output: &str) -> Result<ExecUser> {
    let line = output.lines().next().unwrap_or_default();
    let mut words = line.splitn(6, ' ');
    match words.next() {
        Some("ok") => {}
        Some("unknown") => {
            return Err(Error::invalid(
                "exec user",
                user,
                format!(
                    "sandbox \"{sandbox}\" has no such user; create it in the image's Dockerfile \
                     (for example `RUN useradd {user}`) or use a uid"
                ),
            ))
        }
        Some("no-setpriv") => {
            return Err(Error::invalid(
                "exec user",
                user,
                format!(
                    "running a command as another user on Modal needs `setpriv` (util-linux) in the image \
                     of sandbox \"{sandbox}\"; install it in the Dockerfile (Alpine: `apk add setpriv`)"
                ),
            ))
        }
        _ => {}
    }
    let uid = words.next().and_then(|w| w.parse::<u32>().ok());
    let gid = words.next().and_then(|w| w.parse::<u32>().ok());
    let in_passwd = words.next();
    let home = words.next().map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned);
    match (uid, gid, in_passwd) {
        (Some(uid), Some(gid), Some(flag)) => Ok(ExecUser {
            uid,
            gid,
            in_passwd: flag == "1",
            home,
        }),
        _ => Err(Error::backend(
            crate::error::SERVICE,
            format!("looking up user {user:?} in sandbox \"{sandbox}\" gave unexpected output {line:?}"),
        )),
    }
}

impl ModalProvider {
    /// Looks `user` up in the sandbox's task, once per task.
    pub(crate) async fn exec_user(&self, sandbox: &SandboxName, task: &str, user: &str) -> Result<ExecUser> {
        if let Some(found) = self.state.users.get(task, user) {
            return Ok(found);
        }
        let command = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            LOOKUP_SCRIPT.to_owned(),
            "sh".to_owned(),
            user.to_owned(),
        ];
        let (code, stdout, stderr) = self.run_collect(sandbox, command, None).await?;
        if code != Some(0) {
            return Err(Error::backend(
                crate::error::SERVICE,
                format!(
                    "looking up user {user:?} in sandbox \"{sandbox}\" failed (exit code {}): {}",
                    code.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
                    String::from_utf8_lossy(&stderr).trim()
                ),
            ));
        }
        let found = parse_lookup(user, sandbox, &String::from_utf8_lossy(&stdout))?;
        tracing::debug!(provider = "modal", sandbox.name = %sandbox, user, uid = found.uid, gid = found.gid, "looked up exec user");
        self.state.users.insert(task, user, found.clone());
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> SandboxName {
        SandboxName::new("demo").unwrap()
    }

    #[test]
    fn user_forms() {
        for good in ["postgres", "65534", "www-data", "svc.user", "machine$"] {
            check_user(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["", "-u", "a b", "a;b", "user:group", "ü"] {
            let error = check_user(bad).expect_err(bad).to_string();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
        assert!(check_user("user:group").unwrap_err().to_string().contains("user:group"));
    }

    #[test]
    fn lookup_results() {
        let found = parse_lookup("postgres", &sandbox(), "ok 101 103 1 /var/lib/postgresql\n").unwrap();
        assert_eq!(
            found.command_prefix(),
            ["setpriv", "--reuid=101", "--regid=103", "--init-groups", "--"]
        );
        assert_eq!(found.home(), Some("/var/lib/postgresql"));

        let bare = parse_lookup("4242", &sandbox(), "ok 4242 0 0 \n").unwrap();
        assert_eq!(bare.command_prefix()[3], "--clear-groups");
        assert_eq!(bare.home(), None);

        let unknown = parse_lookup("ghost", &sandbox(), "unknown\n").unwrap_err().to_string();
        assert!(unknown.contains("\"ghost\""), "{unknown}");
        assert!(unknown.contains("no such user"), "{unknown}");
        let tool = parse_lookup("ghost", &sandbox(), "no-setpriv\n").unwrap_err().to_string();
        assert!(tool.contains("setpriv"), "{tool}");
        assert!(parse_lookup("x", &sandbox(), "").is_err());
    }

    /// Runs the lookup script on this machine (every Linux host has root).
    #[test]
    fn lookup_script_finds_root_and_rejects_strangers() {
        let run = |user: &str| {
            let output = std::process::Command::new("sh")
                .args(["-c", LOOKUP_SCRIPT, "sh", user])
                .output()
                .unwrap();
            String::from_utf8(output.stdout).unwrap()
        };
        let has_setpriv = std::process::Command::new("sh")
            .args(["-c", "command -v setpriv"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !has_setpriv {
            assert_eq!(run("root"), "no-setpriv\n");
            return;
        }
        let root = parse_lookup("root", &sandbox(), &run("root")).unwrap();
        assert_eq!((root.uid, root.gid, root.in_passwd), (0, 0, true));
        assert_eq!(run("no-such-user-ken"), "unknown\n");
        assert_eq!(run("4242424"), "ok 4242424 0 0 \n");
    }
}
