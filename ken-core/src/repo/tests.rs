//! Tests of `prepare` on real git repositories in temporary folders, and of
//! `install` with the commands run on the host, including a clone over HTTP from a
//! `git http-backend` server on 127.0.0.1 that requires a token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use super::*;
use crate::manifest::RepositoryConfig;
use crate::plan::testing::{self, host_exec, host_upload};
use crate::sandbox::Capabilities;

const TOKEN: &str = "ghp_TestToken123/with+chars";

/// A part of [`TOKEN`] that survives percent-encoding, which is how git's `store`
/// helper would write it.
const TOKEN_CORE: &str = "TestToken123";

/// Runs git in `dir` with a fixed identity and no user or system configuration,
/// and returns its stdout. Panics when git fails.
fn git_in(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Ken Test",
            "-c",
            "user.email=ken@example.com",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A git repository in a temporary folder, on branch `main`.
struct TestRepo {
    dir: tempfile::TempDir,
}

impl TestRepo {
    fn empty() -> Self {
        let dir = tempfile::tempdir().unwrap();
        git_in(dir.path(), &["init", "--quiet", "-b", "main"]);
        TestRepo { dir }
    }

    fn with_commit() -> Self {
        let repo = TestRepo::empty();
        repo.commit("app.txt", "committed\n");
        repo
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        git_in(self.path(), args)
    }

    fn write(&self, file: &str, contents: &str) {
        let path = self.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    fn commit(&self, file: &str, contents: &str) {
        self.write(file, contents);
        self.git(&["add", file]);
        self.git(&["commit", "--quiet", "-m", &format!("Add {file}")]);
    }
}

/// Returns a manifest in `manifest_dir` whose repository is `config`.
fn manifest_in(manifest_dir: &Path, config: &RepositoryConfig) -> Manifest {
    let mut manifest = testing::manifest(Vec::new());
    manifest.dir = manifest_dir.to_owned();
    manifest.path = manifest_dir.join("ken.toml");
    manifest.repository = Some(config.clone());
    manifest
}

fn path_config(path: &Path) -> RepositoryConfig {
    RepositoryConfig {
        source: RepositorySource::Path(path.to_owned()),
        branch: None,
        workdir: "/workspace/repo".to_owned(),
        subdir: None,
        credential_env: None,
    }
}

fn url_config(url: &str, credential_env: Option<&str>) -> RepositoryConfig {
    RepositoryConfig {
        source: RepositorySource::Url(Url::parse(url).unwrap()),
        branch: None,
        workdir: "/workspace/repo".to_owned(),
        subdir: None,
        credential_env: credential_env.map(str::to_owned),
    }
}

fn prepare_path(repo_path: &Path, manifest_dir: &Path) -> Result<PreparedRepository> {
    let config = path_config(repo_path);
    prepare(&config, &manifest_in(manifest_dir, &config))
}

fn invalid_reason(result: Result<PreparedRepository>) -> String {
    match result {
        Err(error @ Error::InvalidInput { .. }) => error.to_string(),
        Err(other) => panic!("expected invalid input, got {other}"),
        Ok(prepared) => panic!("expected invalid input, got {prepared:?}"),
    }
}

fn bundle_path(prepared: &PreparedRepository) -> PathBuf {
    match &prepared.source {
        PreparedSource::Bundle { folder, .. } => folder.path().join(BUNDLE_NAME),
        PreparedSource::Url { .. } => panic!("expected a bundle"),
    }
}

#[test]
fn prepare_rejects_non_repository() {
    let dir = tempfile::tempdir().unwrap();

    let message = invalid_reason(prepare_path(dir.path(), dir.path()));

    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("not a git repository"), "{message}");
}

#[test]
fn prepare_rejects_repository_without_commits() {
    let repo = TestRepo::empty();

    let message = invalid_reason(prepare_path(repo.path(), repo.path()));

    assert!(
        message
            .contains("commit your work first: Ken clones committed history, not the working tree"),
        "{message}"
    );
}

#[test]
fn bundle_holds_committed_history_only() {
    let repo = TestRepo::with_commit();
    repo.write("app.txt", "edited but not committed\n");
    repo.write("untracked.txt", "never added\n");
    let head = repo.git(&["rev-parse", "HEAD"]);

    let prepared = prepare_path(repo.path(), repo.path()).unwrap();

    let bundle = bundle_path(&prepared);
    let heads = git_in(
        repo.path(),
        &["bundle", "list-heads", bundle.to_str().unwrap()],
    );
    assert_eq!(heads, format!("{} refs/heads/main\n", head.trim()));
    let checkout = tempfile::tempdir().unwrap();
    let clone = checkout.path().join("clone");
    git_in(
        checkout.path(),
        &[
            "clone",
            "--quiet",
            "--branch",
            "main",
            bundle.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(clone.join("app.txt")).unwrap(),
        "committed\n"
    );
    assert!(!clone.join("untracked.txt").exists());
    assert_eq!(
        prepared.describe(),
        format!(
            "branch main of {} (commit {})",
            repo.path().canonicalize().unwrap().display(),
            &head[..12]
        )
    );
}

#[test]
fn bundle_removed_on_drop() {
    let repo = TestRepo::with_commit();
    let prepared = prepare_path(repo.path(), repo.path()).unwrap();
    let bundle = bundle_path(&prepared);
    assert!(bundle.is_file());

    drop(prepared);

    assert!(!bundle.exists());
}

#[test]
fn subdir_defaults_to_manifest_folder() {
    let repo = TestRepo::with_commit();
    repo.commit("services/web/ken.toml", "name = \"web\"\n");
    let outside = tempfile::tempdir().unwrap();
    let cases: [(PathBuf, Option<&str>); 3] = [
        (repo.path().join("services/web"), Some("services/web")),
        (repo.path().to_owned(), None),
        (outside.path().to_owned(), None),
    ];

    for (manifest_dir, expected) in cases {
        let prepared = prepare_path(repo.path(), &manifest_dir).unwrap();

        assert_eq!(
            prepared.subdir(),
            expected,
            "manifest in {}",
            manifest_dir.display()
        );
    }
}

#[test]
fn subdir_applies_to_project_dir() {
    let repo = TestRepo::with_commit();
    repo.commit("services/web/ken.toml", "name = \"web\"\n");
    let config = path_config(repo.path());
    let mut manifest = manifest_in(&repo.path().join("services/web"), &config);

    prepare(&config, &manifest).unwrap().apply_to(&mut manifest);

    assert_eq!(manifest.project_dir(), "/workspace/repo/services/web");
}

#[test]
fn uncommitted_subdir_rejected() {
    let repo = TestRepo::with_commit();
    repo.write("new-service/ken.toml", "name = \"new\"\n");
    let mut config = path_config(repo.path());
    let manifest = manifest_in(&repo.path().join("new-service"), &config);

    let default = invalid_reason(prepare(&config, &manifest));
    config.subdir = Some("docs/".to_owned());
    let configured = invalid_reason(prepare(&config, &manifest));

    assert!(default.contains("\"new-service\""), "{default}");
    assert!(
        default.contains("not in the committed history of branch main"),
        "{default}"
    );
    assert!(configured.contains("\"docs\""), "{configured}");
}

#[test]
fn configured_branch_bundled() {
    let repo = TestRepo::with_commit();
    repo.git(&["checkout", "--quiet", "-b", "feature"]);
    repo.commit("feature.txt", "feature\n");
    repo.git(&["checkout", "--quiet", "main"]);
    let mut config = path_config(repo.path());
    config.branch = Some("feature".to_owned());

    let prepared = prepare(&config, &manifest_in(repo.path(), &config)).unwrap();

    let heads = git_in(
        repo.path(),
        &[
            "bundle",
            "list-heads",
            bundle_path(&prepared).to_str().unwrap(),
        ],
    );
    assert!(heads.ends_with(" refs/heads/feature\n"), "{heads}");
    assert!(
        prepared.describe().starts_with("branch feature of "),
        "{}",
        prepared.describe()
    );

    config.branch = Some("missing".to_owned());
    let message = invalid_reason(prepare(&config, &manifest_in(repo.path(), &config)));
    assert!(message.contains("\"missing\""), "{message}");
    assert!(message.contains("no such branch"), "{message}");
}

/// The argument vector and environment of every exec, in order.
type RecordedRequests = Arc<Mutex<Vec<(Vec<String>, BTreeMap<String, String>)>>>;

/// Returns a sandbox that runs execs and uploads on the host, and the requests it
/// received.
fn recording_host_sandbox(home: &Path) -> (Sandbox, RecordedRequests) {
    let requests = RecordedRequests::default();
    let record = requests.clone();
    let home = home.to_owned();
    let mut provider = testing::mock_provider(Capabilities::none().with_stdin(true));
    provider.expect_exec().returning(move |_, request| {
        record
            .lock()
            .unwrap()
            .push((request.command.clone(), request.env.clone()));
        host_exec(request, &home)
    });
    provider
        .expect_upload()
        .returning(|_, dest, archive| host_upload(dest, &archive));
    (testing::sandbox(provider), requests)
}

#[tokio::test]
async fn install_clones_bundle_on_host() {
    let repo = TestRepo::with_commit();
    repo.write("app.txt", "uncommitted\n");
    let host = tempfile::tempdir().unwrap();
    let mut config = path_config(repo.path());
    config.workdir = host.path().join("workspace/repo").display().to_string();
    let prepared = prepare(&config, &manifest_in(repo.path(), &config)).unwrap();
    let (sandbox, requests) = recording_host_sandbox(host.path());

    prepared.install(&sandbox).await.unwrap();

    let clone = host.path().join("workspace/repo");
    assert_eq!(
        std::fs::read_to_string(clone.join("app.txt")).unwrap(),
        "committed\n"
    );
    assert_eq!(
        git_in(&clone, &["remote"]),
        "",
        "the origin pointing at the bundle must be gone"
    );
    assert_eq!(
        git_in(&clone, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "main\n"
    );
    let requests = requests.lock().unwrap();
    let (_, clone_env) = requests
        .iter()
        .find(|(_, env)| env.contains_key("KEN_BUNDLE_DIR"))
        .unwrap();
    assert!(
        !Path::new(&clone_env["KEN_BUNDLE_DIR"]).exists(),
        "the uploaded bundle must be removed"
    );
}

#[tokio::test]
async fn install_clones_detached_head() {
    let repo = TestRepo::with_commit();
    let first = repo.git(&["rev-parse", "HEAD"]);
    repo.commit("later.txt", "later\n");
    repo.git(&["checkout", "--quiet", "--detach", first.trim()]);
    let host = tempfile::tempdir().unwrap();
    let mut config = path_config(repo.path());
    config.workdir = host.path().join("repo").display().to_string();
    let prepared = prepare(&config, &manifest_in(repo.path(), &config)).unwrap();
    let (sandbox, _) = recording_host_sandbox(host.path());

    prepared.install(&sandbox).await.unwrap();

    assert!(
        prepared.describe().starts_with("detached HEAD of "),
        "{}",
        prepared.describe()
    );
    let clone = host.path().join("repo");
    assert_eq!(git_in(&clone, &["rev-parse", "HEAD"]), first);
    assert!(!clone.join("later.txt").exists());
}

#[tokio::test]
async fn install_failure_shows_git_output() {
    let repo = TestRepo::with_commit();
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(host.path().join("taken")).unwrap();
    std::fs::write(host.path().join("taken/file"), "in the way").unwrap();
    let mut config = path_config(repo.path());
    config.workdir = host.path().join("taken").display().to_string();
    let prepared = prepare(&config, &manifest_in(repo.path(), &config)).unwrap();
    let (sandbox, _) = recording_host_sandbox(host.path());

    let error = prepared.install(&sandbox).await.unwrap_err();

    let Error::StepFailed {
        step,
        status,
        log_tail,
    } = error
    else {
        panic!("expected a step failure, got {error}");
    };
    assert!(step.starts_with("cloning branch main of "), "{step}");
    assert_eq!(status, "exit code 128");
    assert!(
        log_tail.contains("already exists and is not an empty directory"),
        "{log_tail}"
    );
}

#[test]
fn url_token_read_from_named_variable() {
    let config = url_config(
        "https://git.example.com/team/app.git",
        Some("KEN_TEST_TOKEN"),
    );
    let manifest = manifest_in(Path::new("/project"), &config);

    let missing = prepare_with_env(&config, &manifest, &|_| None).unwrap_err();
    let prepared = prepare_with_env(&config, &manifest, &|name| {
        (name == "KEN_TEST_TOKEN").then(|| TOKEN.to_owned())
    })
    .unwrap();

    let message = missing.to_string();
    assert!(message.contains("KEN_TEST_TOKEN"), "{message}");
    assert!(message.contains("not set"), "{message}");
    let printed = format!("{prepared:?}");
    assert!(!printed.contains(TOKEN), "{printed}");
    assert!(printed.contains("redacted"), "{printed}");
    assert_eq!(
        prepared.describe(),
        "default branch of https://git.example.com/team/app.git (token from $KEN_TEST_TOKEN)"
    );
}

#[test]
fn url_rejects_token_for_ssh_and_passwords() {
    let ssh = url_config(
        "ssh://git@git.example.com/team/app.git",
        Some("KEN_TEST_TOKEN"),
    );
    let password = url_config("https://me:hunter2@git.example.com/team/app.git", None);
    let lookup = |_: &str| Some(TOKEN.to_owned());

    let ssh_error =
        prepare_with_env(&ssh, &manifest_in(Path::new("/project"), &ssh), &lookup).unwrap_err();
    let password_error = prepare_with_env(
        &password,
        &manifest_in(Path::new("/project"), &password),
        &lookup,
    )
    .unwrap_err();

    assert!(
        ssh_error.to_string().contains("http:// and https://"),
        "{ssh_error}"
    );
    assert!(
        !password_error.to_string().contains("hunter2"),
        "{password_error}"
    );
    assert!(
        password_error.to_string().contains("contains a password"),
        "{password_error}"
    );
}

/// A smart-HTTP git server on 127.0.0.1 backed by `git http-backend`. It responds
/// with 401 to every request without Basic credentials whose password is the token.
mod git_server {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    /// Every request as `METHOD PATH` and whether it carried the right credentials.
    pub(super) type RequestLog = Arc<Mutex<Vec<(String, bool)>>>;

    pub(super) struct GitServer {
        pub(super) port: u16,
        pub(super) requests: RequestLog,
        task: JoinHandle<()>,
    }

    impl GitServer {
        /// Serves the repositories under `root`, accepting `username:token`.
        pub(super) async fn start(root: PathBuf, username: &str, token: &str) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let expected = format!("Basic {}", base64(format!("{username}:{token}").as_bytes()));
            let requests = RequestLog::default();
            let log = requests.clone();
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (root, expected, log) = (root.clone(), expected.clone(), log.clone());
                    tokio::spawn(async move {
                        if let Err(error) = handle(stream, &root, &expected, &log).await {
                            eprintln!("git test server: {error}");
                        }
                    });
                }
            });
            GitServer {
                port,
                requests,
                task,
            }
        }
    }

    impl Drop for GitServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn handle(
        mut stream: TcpStream,
        root: &PathBuf,
        expected: &str,
        log: &RequestLog,
    ) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        let header_end = loop {
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..read]);
            if let Some(position) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break position + 4;
            }
        };
        let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let target = request_line.next().unwrap_or_default().to_owned();
        let headers: HashMap<String, String> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));

        let authorized = headers.get("authorization").map(String::as_str) == Some(expected);
        log.lock()
            .unwrap()
            .push((format!("{method} {path}"), authorized));
        if !authorized {
            let response = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"ken-test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            stream.write_all(response.as_bytes()).await?;
            return Ok(());
        }
        assert!(
            !headers.contains_key("transfer-encoding"),
            "the test server reads Content-Length bodies only"
        );
        if headers
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let length: usize = headers
            .get("content-length")
            .map_or(0, |v| v.parse().unwrap());
        let mut body = buffer[header_end..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..read]);
        }

        let mut backend = tokio::process::Command::new("git");
        backend
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("REQUEST_METHOD", &method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("CONTENT_LENGTH", length.to_string())
            .env(
                "CONTENT_TYPE",
                headers.get("content-type").cloned().unwrap_or_default(),
            )
            .env(
                "GIT_PROTOCOL",
                headers.get("git-protocol").cloned().unwrap_or_default(),
            )
            .env(
                "HTTP_CONTENT_ENCODING",
                headers.get("content-encoding").cloned().unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = backend.spawn()?;
        let mut stdin = child.stdin.take().unwrap();
        let write = async move {
            let _ = stdin.write_all(&body).await;
        };
        let (output, ()) = tokio::join!(child.wait_with_output(), write);
        let output = output?.stdout;
        let split = output
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("CGI headers");
        let cgi_headers = String::from_utf8_lossy(&output[..split]).into_owned();
        let cgi_body = &output[split + 4..];
        let mut status = "200 OK".to_owned();
        let mut response = String::new();
        for line in cgi_headers.split("\r\n") {
            match line.strip_prefix("Status:") {
                Some(value) => status = value.trim().to_owned(),
                None => {
                    response.push_str(line);
                    response.push_str("\r\n");
                }
            }
        }
        let head = format!(
            "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
            cgi_body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(cgi_body).await?;
        Ok(())
    }

    fn base64(input: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut encoded = String::new();
        for chunk in input.chunks(3) {
            let bytes = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let group =
                (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
            for index in 0..4 {
                if index <= chunk.len() {
                    encoded.push(char::from(
                        ALPHABET[(group >> (18 - 6 * index)) as usize & 63],
                    ));
                } else {
                    encoded.push('=');
                }
            }
        }
        encoded
    }

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}

/// A bare copy of a test repository served over HTTP with a token, and a host folder
/// to clone into whose global git configuration stores every credential git uses.
struct HttpFixture {
    _repo: TestRepo,
    _served: tempfile::TempDir,
    host: tempfile::TempDir,
    server: git_server::GitServer,
}

impl HttpFixture {
    async fn start() -> Self {
        let repo = TestRepo::with_commit();
        let served = tempfile::tempdir().unwrap();
        let bare = served.path().join("app.git");
        git_in(
            served.path(),
            &[
                "clone",
                "--quiet",
                "--bare",
                repo.path().to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        let server =
            git_server::GitServer::start(served.path().to_owned(), "x-access-token", TOKEN).await;
        let host = tempfile::tempdir().unwrap();
        // Without Ken's reset of credential.helper, `store` would write the token to
        // HOME/.git-credentials after a successful clone.
        std::fs::write(
            host.path().join(".gitconfig"),
            "[credential]\n\thelper = store\n",
        )
        .unwrap();
        HttpFixture {
            _repo: repo,
            _served: served,
            host,
            server,
        }
    }

    fn prepare(&self, token: &str) -> PreparedRepository {
        let url = format!("http://127.0.0.1:{}/app.git", self.server.port);
        let mut config = url_config(&url, Some("KEN_TEST_TOKEN"));
        config.workdir = self.clone_dir().display().to_string();
        let token = token.to_owned();
        prepare_with_env(
            &config,
            &manifest_in(Path::new("/project"), &config),
            &move |_| Some(token.clone()),
        )
        .unwrap()
    }

    fn clone_dir(&self) -> PathBuf {
        self.host.path().join("clone")
    }
}

/// Returns every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn install_url_with_token_over_http() {
    let fixture = HttpFixture::start().await;
    let prepared = fixture.prepare(TOKEN);
    let (sandbox, requests) = recording_host_sandbox(fixture.host.path());

    prepared.install(&sandbox).await.unwrap();

    let clone = fixture.clone_dir();
    assert_eq!(
        std::fs::read_to_string(clone.join("app.txt")).unwrap(),
        "committed\n"
    );
    let config = git_in(&clone, &["config", "--list"]);
    assert!(!config.contains(TOKEN), "{config}");
    assert!(!config.contains("credential"), "{config}");
    assert!(
        config.contains(&format!(
            "remote.origin.url=http://127.0.0.1:{}/app.git",
            fixture.server.port
        )),
        "{config}"
    );
    assert!(!fixture.host.path().join(".git-credentials").exists());
    assert_eq!(
        files_containing(fixture.host.path(), TOKEN_CORE),
        Vec::<PathBuf>::new()
    );
    let served = fixture.server.requests.lock().unwrap().clone();
    assert!(
        served.iter().any(|(_, authorized)| !authorized),
        "git must have been asked for credentials: {served:?}"
    );
    assert!(
        served.iter().any(|(_, authorized)| *authorized),
        "{served:?}"
    );
    let requests = requests.lock().unwrap();
    for (command, env) in requests.iter() {
        assert!(
            !command.iter().any(|arg| arg.contains(TOKEN)),
            "token in argv: {command:?}"
        );
        assert_eq!(env.get("KEN_GIT_TOKEN").map(String::as_str), Some(TOKEN));
    }
}

#[tokio::test]
async fn install_url_wrong_token_fails() {
    let fixture = HttpFixture::start().await;
    let prepared = fixture.prepare("wrong-token");
    let (sandbox, _) = recording_host_sandbox(fixture.host.path());

    let error = prepared.install(&sandbox).await.unwrap_err();

    let Error::StepFailed {
        step,
        status,
        log_tail,
    } = error
    else {
        panic!("expected a step failure, got {error}");
    };
    assert!(step.contains("(token from $KEN_TEST_TOKEN)"), "{step}");
    assert_eq!(status, "exit code 128");
    assert!(log_tail.contains("Authentication failed"), "{log_tail}");
    assert!(!log_tail.contains("wrong-token"), "{log_tail}");
    assert!(!fixture.host.path().join(".git-credentials").exists());
}

#[test]
fn clone_failure_redacts_token() {
    let config = url_config("https://git.example.com/app.git", Some("KEN_TEST_TOKEN"));
    let prepared = prepare_with_env(
        &config,
        &manifest_in(Path::new("/project"), &config),
        &|_| Some(TOKEN.to_owned()),
    )
    .unwrap();

    let error = prepared.clone_failed(
        "exit code 128",
        &format!("fatal: bad token {TOKEN}\n"),
        Some(&Secret::new(TOKEN)),
    );

    let message = error.to_string();
    assert!(!message.contains(TOKEN), "{message}");
    assert!(message.contains("fatal: bad token [redacted]"), "{message}");
}
