//! Tests of the plan executor: scheduling, failures and probes against a mocked
//! provider on tokio's paused clock, and the shell wrappers on the host.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;

use super::{run_plan, run_plan_in, Layout, PlanReport};
use crate::error::Error;
use crate::exec::ExecProcess;
use crate::manifest::{Manifest, TaskKind};
use crate::phase::{EventSink, LaunchEvent};
use crate::plan::task::{ALIVE_CHECK, PREPARE_DIRS, SERVICE_WRAPPER, STEP_WRAPPER, TAIL_LOG};
use crate::plan::testing::{self, fake_process, finished_process, manifest, service, step};
use crate::plan::{log_file, pid_file, tail_lines, LOG_DIR, RUN_DIR};
use crate::sandbox::{Capabilities, Sandbox};

/// What a task does inside the fake sandbox.
#[derive(Clone)]
enum Behavior {
    /// A step that appends `log` to its log and exits with `code` after `duration`.
    Step {
        duration: Duration,
        code: i64,
        log: String,
    },
    /// A service whose probe passes once it has run for the given time.
    ReadyAfter(Duration),
    /// A service that writes `log` and exits after the given time. Its probe never
    /// passes.
    ExitsAfter(Duration, String),
    /// A service that keeps running, writes `log`, and whose probe never passes.
    NeverReady(String),
}

fn ok_step(seconds: u64) -> Behavior {
    Behavior::Step {
        duration: Duration::from_secs(seconds),
        code: 0,
        log: String::new(),
    }
}

/// One exec request as the fake received it.
#[derive(Debug, Clone)]
struct Recorded {
    script: String,
    env: BTreeMap<String, String>,
    user: Option<String>,
    workdir: Option<String>,
    timeout: Option<Duration>,
}

/// A sandbox simulated from the wrapper scripts Ken sends. It keeps logs in memory
/// and records when each task started and ended, in milliseconds of paused time.
struct Fake {
    clock: Instant,
    behaviors: HashMap<String, Behavior>,
    logs: Mutex<HashMap<String, String>>,
    started: Mutex<HashMap<String, Instant>>,
    trace: Mutex<Vec<(u128, String)>>,
    requests: Mutex<Vec<Recorded>>,
}

impl Fake {
    fn new(behaviors: &[(&str, Behavior)]) -> Arc<Self> {
        Arc::new(Fake {
            clock: Instant::now(),
            behaviors: behaviors
                .iter()
                .map(|(n, b)| ((*n).to_owned(), b.clone()))
                .collect(),
            logs: Mutex::default(),
            started: Mutex::default(),
            trace: Mutex::default(),
            requests: Mutex::default(),
        })
    }

    fn note(&self, entry: String) {
        let at = self.clock.elapsed().as_millis();
        self.trace.lock().unwrap().push((at, entry));
    }

    fn append_log(&self, name: &str, text: &str) {
        self.logs
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .push_str(text);
    }

    fn running_for(&self, name: &str) -> Duration {
        self.started.lock().unwrap()[name].elapsed()
    }

    fn trace(&self) -> Vec<(u128, String)> {
        self.trace.lock().unwrap().clone()
    }

    fn position(&self, entry: &str) -> usize {
        let trace = self.trace();
        trace
            .iter()
            .position(|(_, e)| e == entry)
            .unwrap_or_else(|| panic!("{entry:?} is not in the trace {trace:?}"))
    }

    fn exec(self: &Arc<Self>, request: crate::exec::ExecRequest) -> crate::Result<ExecProcess> {
        let script = request.command[2].clone();
        self.requests.lock().unwrap().push(Recorded {
            script: script.clone(),
            env: request.env.clone(),
            user: request.user.clone(),
            workdir: request.workdir.clone(),
            timeout: request.timeout,
        });
        let task_from = |key: &str| -> String {
            let path = &request.env[key];
            Path::new(path)
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };

        if script == PREPARE_DIRS {
            return Ok(finished_process("", "", 0));
        }
        if script == STEP_WRAPPER {
            let name = task_from("KEN_TASK_LOG");
            let Some(Behavior::Step {
                duration,
                code,
                log,
            }) = self.behaviors.get(&name).cloned()
            else {
                panic!("{name} is not a step of this test");
            };
            self.note(format!("start {name}"));
            let fake = self.clone();
            let run = async move {
                tokio::time::sleep(duration).await;
                fake.append_log(&name, &log);
                fake.note(format!("end {name}"));
                Some(code)
            };
            return Ok(fake_process("", "", request.timeout, run.boxed()));
        }
        if script == SERVICE_WRAPPER {
            let name = task_from("KEN_TASK_LOG");
            self.note(format!("start {name}"));
            self.started
                .lock()
                .unwrap()
                .insert(name.clone(), Instant::now());
            match &self.behaviors[&name] {
                Behavior::ExitsAfter(_, log) | Behavior::NeverReady(log) => {
                    self.append_log(&name, log)
                }
                _ => {}
            }
            return Ok(finished_process("", "", 0));
        }
        if script == ALIVE_CHECK {
            let name = task_from("KEN_TASK_PIDFILE");
            let alive = match &self.behaviors[&name] {
                Behavior::ExitsAfter(after, _) => self.running_for(&name) < *after,
                _ => true,
            };
            return Ok(finished_process("", "", if alive { 0 } else { 1 }));
        }
        if script == TAIL_LOG {
            let name = task_from("KEN_TASK_LOG");
            let lines: usize = request.env["KEN_TAIL_LINES"].parse().unwrap();
            let log = self
                .logs
                .lock()
                .unwrap()
                .get(&name)
                .cloned()
                .unwrap_or_default();
            return Ok(finished_process(&tail_lines(&log, lines), "", 0));
        }
        if let Some(name) = script.strip_prefix("probe ") {
            let ready = match &self.behaviors[name] {
                Behavior::ReadyAfter(after) => self.running_for(name) >= *after,
                _ => false,
            };
            if ready {
                self.note(format!("ready {name}"));
            }
            return Ok(finished_process("", "not yet\n", if ready { 0 } else { 1 }));
        }
        panic!("the fake sandbox got an unexpected script: {script}");
    }
}

/// Returns a sandbox whose provider sends every exec to `fake`.
fn fake_sandbox(fake: &Arc<Fake>) -> Sandbox {
    let mut provider = testing::mock_provider(Capabilities::none().with_exec_user(true));
    let fake = fake.clone();
    provider
        .expect_exec()
        .returning(move |_, request| fake.exec(request));
    testing::sandbox(provider)
}

/// Returns an event sink and the list it appends `started NAME` and `finished NAME`
/// to.
fn recording_sink() -> (EventSink, Arc<Mutex<Vec<String>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink_events = events.clone();
    let sink = EventSink::new(move |event| {
        let entry = match event {
            LaunchEvent::StepStarted { step } => format!("started {step}"),
            LaunchEvent::StepFinished { step, .. } => format!("finished {step}"),
            other => format!("{other:?}"),
        };
        sink_events.lock().unwrap().push(entry);
    });
    (sink, events)
}

async fn run(
    fake: &Arc<Fake>,
    manifest: &Manifest,
    events: &EventSink,
) -> crate::Result<PlanReport> {
    run_plan(&fake_sandbox(fake), manifest, events).await
}

fn step_failure(result: crate::Result<PlanReport>) -> (String, String, String) {
    match result {
        Err(Error::StepFailed {
            step,
            status,
            log_tail,
        }) => (step, status, log_tail),
        Err(other) => panic!("expected a step failure, got {other}"),
        Ok(report) => panic!("expected a step failure, got {report:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn dependent_starts_after_dependency() {
    let fake = Fake::new(&[("install", ok_step(3)), ("build", ok_step(1))]);
    let plan = manifest(vec![
        step("build", "make", &["install"]),
        step("install", "npm ci", &[]),
    ]);
    let (sink, events) = recording_sink();

    let report = run(&fake, &plan, &sink).await.unwrap();

    assert!(fake.position("end install") < fake.position("start build"));
    assert_eq!(
        *events.lock().unwrap(),
        [
            "started install",
            "finished install",
            "started build",
            "finished build"
        ]
    );
    let names: Vec<&str> = report.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["install", "build"]);
    assert_eq!(report.tasks[0].duration, Duration::from_secs(3));
    assert_eq!(report.tasks[1].duration, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn independent_steps_overlap() {
    let fake = Fake::new(&[
        ("deps", ok_step(2)),
        ("assets", ok_step(1)),
        ("build", ok_step(1)),
    ]);
    let plan = manifest(vec![
        step("deps", "npm ci", &[]),
        step("assets", "make assets", &[]),
        step("build", "make", &["deps", "assets"]),
    ]);
    let started = Instant::now();

    run(&fake, &plan, &EventSink::none()).await.unwrap();

    let expected = [
        (0, "start deps"),
        (0, "start assets"),
        (1000, "end assets"),
        (2000, "end deps"),
        (2000, "start build"),
        (3000, "end build"),
    ];
    let expected: Vec<(u128, String)> = expected
        .iter()
        .map(|(t, e)| (*t, (*e).to_owned()))
        .collect();
    assert_eq!(fake.trace(), expected);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn failing_step_returns_name_and_tail() {
    let log: String = (1..=40).map(|i| format!("migration line {i}\n")).collect();
    let fake = Fake::new(&[
        (
            "migrate",
            Behavior::Step {
                duration: Duration::from_secs(1),
                code: 3,
                log,
            },
        ),
        ("slow", ok_step(100)),
        ("after", ok_step(1)),
    ]);
    let plan = manifest(vec![
        step("migrate", "./migrate", &[]),
        step("slow", "sleep 100", &[]),
        step("after", "true", &["migrate"]),
    ]);
    let (sink, events) = recording_sink();
    let started = Instant::now();

    let (name, status, tail) = step_failure(run(&fake, &plan, &sink).await);

    assert_eq!(name, "migrate");
    assert_eq!(status, "exit code 3");
    assert!(tail.starts_with("migration line 11\n"), "tail: {tail}");
    assert!(tail.ends_with("migration line 40"), "tail: {tail}");
    assert!(!tail.contains("migration line 10\n"), "tail: {tail}");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "the failure must not wait for `slow`"
    );
    assert!(!events.lock().unwrap().contains(&"started after".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn step_timeout_fails() {
    let fake = Fake::new(&[(
        "hang",
        Behavior::Step {
            duration: Duration::from_secs(3600),
            code: 0,
            log: String::new(),
        },
    )]);
    let mut hang = step("hang", "sleep infinity", &[]);
    hang.timeout = Duration::from_secs(5);
    let started = Instant::now();

    let (name, status, _) =
        step_failure(run(&fake, &manifest(vec![hang]), &EventSink::none()).await);

    assert_eq!(name, "hang");
    assert_eq!(status, "timed out after 5s");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn service_ready_before_dependents() {
    let fake = Fake::new(&[
        ("db", Behavior::ReadyAfter(Duration::from_secs(3))),
        ("migrate", ok_step(1)),
    ]);
    let plan = manifest(vec![
        service("db", "postgres", &[], "probe db", Duration::from_secs(30)),
        step("migrate", "./migrate", &["db"]),
    ]);

    let report = run(&fake, &plan, &EventSink::none()).await.unwrap();

    assert!(fake.position("ready db") < fake.position("start migrate"));
    let (ready_at, _) = fake.trace()[fake.position("ready db")];
    assert!(
        (3000..3000 + 1000).contains(&ready_at),
        "ready at {ready_at} ms"
    );
    assert_eq!(report.tasks[0].name, "db");
    assert_eq!(report.tasks[0].kind, TaskKind::Service);
    assert_eq!(report.tasks[0].duration.as_millis(), ready_at);
}

#[tokio::test(start_paused = true)]
async fn service_exit_before_ready_fails_fast() {
    let fake = Fake::new(&[(
        "api",
        Behavior::ExitsAfter(
            Duration::from_millis(500),
            "api: bind: address already in use\n".to_owned(),
        ),
    )]);
    let plan = manifest(vec![service(
        "api",
        "./api",
        &[],
        "probe api",
        Duration::from_secs(60),
    )]);
    let started = Instant::now();

    let (name, status, tail) = step_failure(run(&fake, &plan, &EventSink::none()).await);

    assert_eq!(name, "api");
    assert_eq!(
        status,
        "exited before its readiness probe (command `probe api`) passed"
    );
    assert_eq!(tail, "api: bind: address already in use");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn probe_timeout_names_service_and_probe() {
    let fake = Fake::new(&[(
        "web",
        Behavior::NeverReady("listening on 3000?\n".to_owned()),
    )]);
    let plan = manifest(vec![service(
        "web",
        "npm start",
        &[],
        "probe web",
        Duration::from_secs(30),
    )]);
    let started = Instant::now();

    let (name, status, tail) = step_failure(run(&fake, &plan, &EventSink::none()).await);

    assert_eq!(name, "web");
    assert!(
        status.starts_with("readiness probe (command `probe web`) did not pass within 30s"),
        "status: {status}"
    );
    assert!(tail.starts_with("listening on 3000?\n"), "tail: {tail}");
    assert!(
        tail.ends_with("(last output of the readiness probe:)\nnot yet"),
        "tail: {tail}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn step_request_carries_env_user_workdir() {
    let fake = Fake::new(&[("seed", ok_step(1))]);
    let mut seed = step("seed", "echo \"it's $HOME\"", &[]);
    seed.user = Some("app".to_owned());
    seed.workdir = Some("web".to_owned());
    seed.timeout = Duration::from_secs(90);
    seed.env.insert("MODE".to_owned(), "task".to_owned());
    let mut plan = manifest(vec![seed]);
    plan.env.insert("MODE".to_owned(), "manifest".to_owned());
    plan.env.insert(
        "DATABASE_URL".to_owned(),
        "postgresql://127.0.0.1/demo".to_owned(),
    );
    plan.repository.as_mut().unwrap().subdir = Some("app".to_owned());

    run(&fake, &plan, &EventSink::none()).await.unwrap();

    let requests = fake.requests.lock().unwrap().clone();
    assert_eq!(requests[0].script, PREPARE_DIRS);
    assert_eq!(requests[0].user.as_deref(), Some("0"));
    assert_eq!(requests[0].env["KEN_LOG_DIR"], LOG_DIR);
    assert_eq!(requests[0].env["KEN_RUN_DIR"], RUN_DIR);
    let step = &requests[1];
    assert_eq!(step.script, STEP_WRAPPER);
    assert_eq!(step.env["KEN_TASK_SCRIPT"], "echo \"it's $HOME\"");
    assert_eq!(step.env["KEN_TASK_LOG"], log_file("seed"));
    assert_eq!(step.env["MODE"], "task");
    assert_eq!(step.env["DATABASE_URL"], "postgresql://127.0.0.1/demo");
    assert_eq!(step.user.as_deref(), Some("app"));
    assert_eq!(step.workdir.as_deref(), Some("/workspace/repo/app/web"));
    assert_eq!(step.timeout, Some(Duration::from_secs(90)));
    assert_eq!(requests.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn service_request_writes_pid_file() {
    let fake = Fake::new(&[("db", Behavior::ReadyAfter(Duration::ZERO))]);
    let plan = manifest(vec![service(
        "db",
        "postgres",
        &[],
        "probe db",
        Duration::from_secs(5),
    )]);

    run(&fake, &plan, &EventSink::none()).await.unwrap();

    let requests = fake.requests.lock().unwrap().clone();
    let start = requests
        .iter()
        .find(|r| r.script == SERVICE_WRAPPER)
        .unwrap();
    assert_eq!(start.env["KEN_TASK_SCRIPT"], "postgres");
    assert_eq!(start.env["KEN_TASK_PIDFILE"], pid_file("db"));
    assert_eq!(start.env["KEN_TASK_LOG"], log_file("db"));
    let probe = requests.iter().find(|r| r.script == "probe db").unwrap();
    assert_eq!(probe.workdir.as_deref(), Some("/workspace/repo"));
}

#[tokio::test(start_paused = true)]
async fn invalid_plans_rejected_before_exec() {
    let cases = [
        (vec![step("a", "true", &["missing"])], "missing"),
        (
            vec![step("a", "true", &["b"]), step("b", "true", &["a"])],
            "a, b",
        ),
        (vec![step("../etc", "true", &[])], "../etc"),
        (
            vec![step("a", "true", &[]), step("a", "true", &[])],
            "unique",
        ),
    ];
    for (tasks, expected) in cases {
        let mut provider = testing::mock_provider(Capabilities::none());
        provider.expect_exec().never();
        let sandbox = testing::sandbox(provider);

        let error = run_plan(&sandbox, &manifest(tasks), &EventSink::none())
            .await
            .unwrap_err();

        assert!(matches!(error, Error::InvalidInput { .. }), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[tokio::test(start_paused = true)]
async fn empty_plan_only_creates_folders() {
    let fake = Fake::new(&[]);

    let report = run(&fake, &manifest(Vec::new()), &EventSink::none())
        .await
        .unwrap();

    assert!(report.tasks.is_empty());
    assert_eq!(fake.requests.lock().unwrap().len(), 1);
}

/// Runs the real wrapper scripts with `sh` on the host, with logs and pid files in a
/// temporary folder.
mod host {
    use super::*;

    struct HostPlan {
        dir: tempfile::TempDir,
        layout: Layout,
    }

    impl HostPlan {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let layout = Layout {
                log_dir: dir.path().join("log").display().to_string(),
                run_dir: dir.path().join("run").display().to_string(),
            };
            std::fs::create_dir(dir.path().join("project")).unwrap();
            HostPlan { dir, layout }
        }

        fn manifest(&self, tasks: Vec<crate::manifest::Task>) -> Manifest {
            let mut plan = manifest(tasks);
            plan.repository.as_mut().unwrap().workdir =
                self.dir.path().join("project").display().to_string();
            plan
        }

        async fn run(&self, plan: &Manifest) -> crate::Result<PlanReport> {
            let sandbox = testing::sandbox(testing::host_provider(self.dir.path().to_owned()));
            run_plan_in(&sandbox, plan, &EventSink::none(), &self.layout).await
        }

        fn log(&self, name: &str) -> String {
            std::fs::read_to_string(self.layout.log_file(name)).unwrap()
        }

        /// Stops a service this test started, by the pid in its pid file.
        fn stop(&self, name: &str) {
            let pid = std::fs::read_to_string(self.layout.pid_file(name)).unwrap();
            let status = std::process::Command::new("kill")
                .arg(pid.trim())
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    #[tokio::test]
    async fn step_and_service_run_on_host() {
        let host = HostPlan::new();
        let mut hello = step("hello", "echo \"out $GREETING\"; echo 'err' >&2; pwd", &[]);
        hello
            .env
            .insert("GREETING".to_owned(), "it's \"quoted\"".to_owned());
        let plan = host.manifest(vec![
            hello,
            service(
                "sleeper",
                "sleep 0.2; touch ready; echo up; exec sleep 30",
                &["hello"],
                "test -f ready",
                Duration::from_secs(10),
            ),
        ]);

        let report = host.run(&plan).await.unwrap();

        let project = host.dir.path().join("project");
        assert_eq!(
            host.log("hello"),
            format!("out it's \"quoted\"\nerr\n{}\n", project.display())
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&host.layout.log_dir)
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o7777, 0o1777);
        let pid: u32 = std::fs::read_to_string(host.layout.pid_file("sleeper"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "the service must keep running"
        );
        assert_eq!(report.tasks.len(), 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(host.log("sleeper"), "up\n");
        host.stop("sleeper");
    }

    #[tokio::test]
    async fn failing_step_shows_real_tail() {
        let host = HostPlan::new();
        let plan = host.manifest(vec![step(
            "count",
            "seq 1 40; echo 'boom' >&2; exit 7",
            &[],
        )]);

        let (name, status, tail) = step_failure(host.run(&plan).await);

        assert_eq!(name, "count");
        assert_eq!(status, "exit code 7");
        let lines: Vec<&str> = tail.lines().collect();
        assert_eq!(lines.len(), 30);
        assert_eq!(lines[0], "12");
        assert_eq!(lines[29], "boom");
    }

    #[tokio::test]
    async fn exited_service_fails_with_its_log() {
        let host = HostPlan::new();
        let plan = host.manifest(vec![service(
            "api",
            "echo 'config missing' >&2; exit 3",
            &[],
            "false",
            Duration::from_secs(20),
        )]);
        let (name, status, tail) = step_failure(host.run(&plan).await);

        assert_eq!(name, "api");
        assert!(status.starts_with("exited before"), "status: {status}");
        // The status proves the executor noticed the exit instead of waiting for the
        // probe's 20 s timeout, which would report a probe that did not pass.
        assert_eq!(tail, "config missing");
    }
}
