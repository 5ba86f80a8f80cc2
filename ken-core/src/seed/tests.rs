use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::*;
use crate::exec::Stdin;
use crate::plan::testing::{self, finished_process, manifest};
use crate::sandbox::Capabilities;

/// Writes `files` (name, contents) into `dir` and returns their paths in order.
fn write_files(dir: &Path, files: &[(&str, &str)]) -> Vec<PathBuf> {
    files
        .iter()
        .map(|(name, contents)| {
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        })
        .collect()
}

/// Returns a sandbox whose provider panics on exec, because an SQL fingerprint never
/// needs the sandbox.
fn no_exec_sandbox() -> Sandbox {
    let mut provider = testing::mock_provider(Capabilities::none());
    provider.expect_exec().never();
    testing::sandbox(provider)
}

/// What the mock received for one exec.
#[derive(Debug, Clone, Default)]
struct Sent {
    command: Vec<String>,
    stdin: Vec<u8>,
    user: Option<String>,
    workdir: Option<String>,
    env: BTreeMap<String, String>,
}

/// Returns a sandbox whose exec records the request and responds with `stderr` and
/// `code`.
fn psql_sandbox(stderr: &'static str, code: i64) -> (Sandbox, Arc<Mutex<Vec<Sent>>>) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    let mut provider = testing::mock_provider(Capabilities::none().with_stdin(true));
    provider
        .expect_exec()
        .times(1)
        .returning(move |_, request| {
            let stdin = match request.stdin {
                Some(Stdin::Bytes(bytes)) => bytes.to_vec(),
                Some(Stdin::Reader(_)) => panic!("the SQL seeder sends stdin as bytes"),
                None => Vec::new(),
            };
            record.lock().unwrap().push(Sent {
                command: request.command,
                stdin,
                user: request.user,
                workdir: request.workdir,
                env: request.env,
            });
            Ok(finished_process("", stderr, code))
        });
    (testing::sandbox(provider), sent)
}

#[tokio::test]
async fn sql_fingerprint_is_stable() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let files = [
        ("schema.sql", "create table t (id int);\n"),
        ("data.sql", "insert into t values (1);\n"),
    ];
    let seeder = SqlSeeder::new(write_files(first.path(), &files), "demo").with_user("postgres");
    let moved = SqlSeeder::new(write_files(second.path(), &files), "demo").with_user("postgres");
    let sandbox = no_exec_sandbox();

    let fingerprint = seeder.fingerprint(&sandbox).await.unwrap();

    assert_eq!(fingerprint.len(), 64);
    assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(seeder.fingerprint(&sandbox).await.unwrap(), fingerprint);
    assert_eq!(
        moved.fingerprint(&sandbox).await.unwrap(),
        fingerprint,
        "the host folder must not count"
    );
}

#[tokio::test]
async fn sql_fingerprint_changes_with_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(
        dir.path(),
        &[
            ("schema.sql", "create table t (id int);\n"),
            ("data.sql", "insert into t values (1);\n"),
            ("data2.sql", "insert into t values (1);\n"),
            ("edited.sql", "insert into t values (2);\n"),
        ],
    );
    let (schema, data, renamed, edited) = (&files[0], &files[1], &files[2], &files[3]);
    let base = || SqlSeeder::new(vec![schema.clone(), data.clone()], "demo");
    let variants = [
        ("base", base()),
        (
            "one byte changed",
            SqlSeeder::new(vec![schema.clone(), edited.clone()], "demo"),
        ),
        (
            "file renamed",
            SqlSeeder::new(vec![schema.clone(), renamed.clone()], "demo"),
        ),
        (
            "order swapped",
            SqlSeeder::new(vec![data.clone(), schema.clone()], "demo"),
        ),
        (
            "other database",
            SqlSeeder::new(vec![schema.clone(), data.clone()], "demo2"),
        ),
        ("with a user", base().with_user("postgres")),
        ("other user", base().with_user("app")),
        (
            "one file fewer",
            SqlSeeder::new(vec![schema.clone()], "demo"),
        ),
    ];
    let sandbox = no_exec_sandbox();

    let mut seen: Vec<(&str, String)> = Vec::new();
    for (case, seeder) in &variants {
        let fingerprint = seeder.fingerprint(&sandbox).await.unwrap();
        if let Some((other, _)) = seen.iter().find(|(_, f)| *f == fingerprint) {
            panic!("{case} has the same fingerprint as {other}");
        }
        seen.push((case, fingerprint));
    }
}

#[tokio::test]
async fn sql_fingerprint_ignores_env_and_workdir() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path(), &[("a.sql", "select 1;\n")]);
    let plain = SqlSeeder::new(files.clone(), "demo");
    let env = BTreeMap::from([("PGHOST".to_owned(), "127.0.0.1".to_owned())]);
    let configured = SqlSeeder::new(files, "demo")
        .with_env(env)
        .with_workdir("/srv");
    let sandbox = no_exec_sandbox();

    assert_eq!(
        plain.fingerprint(&sandbox).await.unwrap(),
        configured.fingerprint(&sandbox).await.unwrap()
    );
}

#[tokio::test]
async fn sql_seed_sends_psql_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    // The first file lacks a final newline, so its trailing comment must not
    // swallow the next file's first line.
    let files = write_files(
        dir.path(),
        &[
            ("a.sql", "create table t (id int); -- end"),
            ("b.sql", "insert into t values (1);\n"),
        ],
    );
    let env = BTreeMap::from([("PGHOST".to_owned(), "127.0.0.1".to_owned())]);
    let seeder = SqlSeeder::new(files, "demo")
        .with_user("postgres")
        .with_workdir("/workspace/repo")
        .with_env(env.clone());
    let (sandbox, sent) = psql_sandbox("", 0);

    seeder.seed(&sandbox).await.unwrap();

    let sent = sent.lock().unwrap()[0].clone();
    let expected = [
        "psql",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "-X",
        "-q",
        "-d",
        "demo",
        "-f",
        "-",
    ];
    assert_eq!(sent.command, expected);
    assert_eq!(
        String::from_utf8(sent.stdin).unwrap(),
        "create table t (id int); -- end\ninsert into t values (1);\n"
    );
    assert_eq!(sent.user.as_deref(), Some("postgres"));
    assert_eq!(sent.workdir.as_deref(), Some("/workspace/repo"));
    assert_eq!(sent.env, env);
}

#[tokio::test]
async fn sql_seed_failure_shows_psql_error() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(
        dir.path(),
        &[
            ("schema.sql", "create table t (id int);\n\n"),
            ("data.sql", "insert into t values (1);\nselec 2;\n"),
        ],
    );
    let seeder = SqlSeeder::new(files, "demo");
    let stderr =
        "psql:<stdin>:4: ERROR:  syntax error at or near \"selec\"\nLINE 1: selec 2;\n        ^\n";
    let (sandbox, _) = psql_sandbox(stderr, 3);

    let error = seeder.seed(&sandbox).await.unwrap_err();

    let Error::StepFailed {
        step,
        status,
        log_tail,
    } = error
    else {
        panic!("expected a step failure, got {error}");
    };
    assert_eq!(step, "seed (sql: 2 files into demo)");
    assert_eq!(status, "psql: exit code 3");
    assert_eq!(
        log_tail,
        "psql:data.sql:2: ERROR:  syntax error at or near \"selec\"\nLINE 1: selec 2;\n        ^"
    );
}

#[test]
fn sql_input_locates_lines() {
    let input = SqlInput::concatenate(vec![
        ("a.sql".to_owned(), b"1\n2\n".to_vec()),
        ("empty.sql".to_owned(), Vec::new()),
        ("b.sql".to_owned(), b"1\n2".to_vec()),
    ]);

    assert_eq!(input.locate(1), Some(("a.sql", 1)));
    assert_eq!(input.locate(2), Some(("a.sql", 2)));
    assert_eq!(input.locate(3), Some(("b.sql", 1)));
    assert_eq!(input.locate(4), Some(("b.sql", 2)));
    assert_eq!(input.locate(5), None);
    assert_eq!(input.relabel("psql:<stdin>:9: x\n"), "psql:<stdin>:9: x\n");
}

#[tokio::test]
async fn sql_seed_missing_file_names_it() {
    let seeder = SqlSeeder::new(vec![PathBuf::from("/nonexistent/ken/seed.sql")], "demo");

    let error = seeder.seed(&no_exec_sandbox()).await.unwrap_err();

    assert!(
        error.to_string().contains("/nonexistent/ken/seed.sql"),
        "{error}"
    );
}

/// A project folder on the host that the host provider execs in.
struct HostProject {
    dir: tempfile::TempDir,
}

impl HostProject {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("project")).unwrap();
        write_files(&dir.path().join("project"), files);
        HostProject { dir }
    }

    fn project(&self) -> String {
        self.dir.path().join("project").display().to_string()
    }

    fn sandbox(&self) -> Sandbox {
        testing::sandbox(testing::host_provider(self.dir.path().to_owned()))
    }

    fn seeder(&self, command: &str, inputs: &[&str]) -> CommandSeeder {
        CommandSeeder::new(command)
            .with_inputs(inputs.iter().map(|i| (*i).to_owned()).collect())
            .with_workdir(self.project())
    }
}

#[tokio::test]
async fn command_fingerprint_reads_inputs() {
    let project = HostProject::new(&[
        ("seeds.rb", "User.create!\n"),
        ("fixtures.json", "[1, 2]\n"),
    ]);
    let sandbox = project.sandbox();
    let seeder = project.seeder("bin/rails db:seed", &["seeds.rb", "fixtures.json"]);

    let before = seeder.fingerprint(&sandbox).await.unwrap();
    assert_eq!(seeder.fingerprint(&sandbox).await.unwrap(), before);
    std::fs::write(
        Path::new(&project.project()).join("fixtures.json"),
        "[1, 3]\n",
    )
    .unwrap();
    let after_edit = seeder.fingerprint(&sandbox).await.unwrap();
    let other_command = project.seeder("bin/rails db:seed:replant", &["seeds.rb", "fixtures.json"]);

    assert_eq!(before.len(), 64);
    assert_ne!(
        after_edit, before,
        "a changed input must change the fingerprint"
    );
    assert_ne!(
        other_command.fingerprint(&sandbox).await.unwrap(),
        after_edit
    );
}

#[tokio::test]
async fn command_fingerprint_covers_user() {
    let users = Arc::new(Mutex::new(Vec::new()));
    let record = users.clone();
    let mut provider = testing::mock_provider(Capabilities::none().with_exec_user(true));
    provider
        .expect_exec()
        .times(2)
        .returning(move |_, request| {
            record.lock().unwrap().push((request.user, request.workdir));
            Ok(finished_process("same contents", "", 0))
        });
    let sandbox = testing::sandbox(provider);
    let plain = CommandSeeder::new("bin/seed")
        .with_inputs(vec!["seeds.rb".to_owned()])
        .with_workdir("/srv");
    let as_app = plain.clone().with_user("app");

    let plain_fingerprint = plain.fingerprint(&sandbox).await.unwrap();
    let app_fingerprint = as_app.fingerprint(&sandbox).await.unwrap();

    assert_ne!(plain_fingerprint, app_fingerprint);
    let users = users.lock().unwrap().clone();
    assert_eq!(users[0], (None, Some("/srv".to_owned())));
    assert_eq!(users[1], (Some("app".to_owned()), Some("/srv".to_owned())));
}

#[tokio::test]
async fn command_fingerprint_missing_input_names_it() {
    let project = HostProject::new(&[("seeds.rb", "User.create!\n")]);
    let seeder = project.seeder("bin/rails db:seed", &["seeds.rb", "db/missing.csv"]);

    let error = seeder.fingerprint(&project.sandbox()).await.unwrap_err();

    assert!(matches!(error, Error::InvalidInput { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("db/missing.csv"), "{message}");
    assert!(message.contains("No such file"), "{message}");
}

#[tokio::test]
async fn command_seed_runs_in_project_dir() {
    let project = HostProject::new(&[]);
    let env = BTreeMap::from([("SEED_SIZE".to_owned(), "small".to_owned())]);
    let seeder = project
        .seeder("pwd > seeded.txt; echo \"$SEED_SIZE\" >> seeded.txt", &[])
        .with_env(env);

    seeder.seed(&project.sandbox()).await.unwrap();

    let written =
        std::fs::read_to_string(Path::new(&project.project()).join("seeded.txt")).unwrap();
    assert_eq!(written, format!("{}\nsmall\n", project.project()));
}

#[tokio::test]
async fn command_seed_failure_shows_output() {
    let project = HostProject::new(&[]);
    let seeder = project.seeder(
        "echo loading users; echo 'users.csv: bad row 3' >&2; exit 4",
        &[],
    );

    let error = seeder.seed(&project.sandbox()).await.unwrap_err();

    let Error::StepFailed {
        step,
        status,
        log_tail,
    } = error
    else {
        panic!("expected a step failure, got {error}");
    };
    assert!(
        step.starts_with("seed (command: echo loading users;"),
        "{step}"
    );
    assert_eq!(status, "exit code 4");
    assert!(log_tail.contains("users.csv: bad row 3"), "{log_tail}");
    assert!(log_tail.contains("loading users"), "{log_tail}");
}

#[test]
fn seeder_for_reads_manifest() {
    let mut plan = manifest(Vec::new());
    assert!(seeder_for(&plan).unwrap().is_none());

    plan.seed = Some(SeedConfig::Sql {
        files: vec![PathBuf::from("/project/db/seed.sql")],
        database: "demo".to_owned(),
        user: Some("postgres".to_owned()),
    });
    let sql = seeder_for(&plan).unwrap().unwrap();
    assert_eq!(sql.describe(), "sql: 1 file into demo");
    assert!(format!("{sql:?}").contains("/workspace/repo"), "{sql:?}");

    plan.seed = Some(SeedConfig::Command {
        command: "bin/seed --size small".to_owned(),
        inputs: vec!["db/seeds.rb".to_owned()],
        user: None,
    });
    plan.env
        .insert("API_TOKEN".to_owned(), "s3cr3t-value".to_owned());
    let command = seeder_for(&plan).unwrap().unwrap();
    assert_eq!(command.describe(), "command: bin/seed --size small");
    let printed = format!("{command:?}");
    assert!(printed.contains("API_TOKEN"), "{printed}");
    assert!(!printed.contains("s3cr3t-value"), "{printed}");
}

#[test]
fn command_describe_shortens_long_commands() {
    let seeder = CommandSeeder::new(format!("{}\nsecond line", "x".repeat(80)));

    assert_eq!(seeder.describe(), format!("command: {}...", "x".repeat(60)));
}
