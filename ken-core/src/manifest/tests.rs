use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM debian:bookworm-slim\n").unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("db/seed.sql"), "select 1;\n").unwrap();
        Fixture { dir }
    }

    fn parse(&self, text: &str) -> Result<Manifest> {
        Manifest::parse(&self.dir.path().join("ken.toml"), text)
    }

    fn error(&self, text: &str) -> (usize, String) {
        match self.parse(text) {
            Err(Error::Manifest { line, message, .. }) => (line, message),
            Err(other) => panic!("expected a manifest error, got {other}"),
            Ok(_) => panic!("expected a manifest error for:\n{text}"),
        }
    }
}

const FULL: &str = r#"
name = "demo"
ttl = "2h"
secrets = ["OPENAI_API_KEY"]

[image]
dockerfile = "Dockerfile"
context = "."

[resources]
cpus = 1.5
memory = "2GiB"
pids = 512

[repository]
path = "."
workdir = "/workspace/repo"

[env]
DATABASE_URL = "postgresql://postgres@127.0.0.1/demo"

[[services]]
name = "postgres"
run = "postgres"
user = "postgres"
ready = { tcp = 5432, timeout = "30s" }

[[steps]]
name = "schema"
run = "psql -f db/schema.sql"
depends_on = ["postgres"]
timeout = "2m"

[[services]]
name = "web"
run = "python3 app.py"
depends_on = ["schema"]
ready = { http = "http://127.0.0.1:8080/healthz" }

[[ports]]
name = "web"
port = 8080

[seed]
sql = ["db/seed.sql"]
database = "demo"
user = "postgres"
"#;

#[test]
fn full_manifest_parses() {
    let fixture = Fixture::new();
    let manifest = fixture.parse(FULL).unwrap();
    assert_eq!(manifest.name, "demo");
    assert_eq!(manifest.ttl, Duration::from_secs(7200));
    assert_eq!(manifest.resources.cpus, Some(1.5));
    assert_eq!(manifest.resources.memory_bytes, Some(2 << 30));
    assert_eq!(manifest.resources.pids, Some(512));
    assert_eq!(manifest.tasks.len(), 3);
    assert_eq!(manifest.secrets, vec!["OPENAI_API_KEY".to_owned()]);
    let web = manifest.tasks.iter().find(|t| t.name == "web").unwrap();
    assert_eq!(web.kind, TaskKind::Service);
    assert_eq!(
        web.ready.as_ref().unwrap().probe,
        Probe::Http {
            port: 8080,
            path: "/healthz".into()
        }
    );
    assert_eq!(web.ready.as_ref().unwrap().timeout, DEFAULT_READY_TIMEOUT);
    let schema = manifest.tasks.iter().find(|t| t.name == "schema").unwrap();
    assert_eq!(schema.timeout, Duration::from_secs(120));
    assert_eq!(manifest.ports[0].port, 8080);
    assert!(matches!(manifest.seed, Some(SeedConfig::Sql { .. })));
    assert_eq!(manifest.network.kind, "local");
    assert_eq!(manifest.project_dir(), "/workspace/repo");
    assert_eq!(manifest.hash.len(), 64);
}

#[test]
fn unknown_key_names_key_and_line() {
    let fixture = Fixture::new();
    let (line, message) = fixture.error("name = \"demo\"\n[image]\ndockerfile = \"Dockerfile\"\ncolour = \"red\"\n");
    assert_eq!(line, 4);
    assert!(message.contains("colour"), "{message}");
}

#[test]
fn unknown_dependency_is_named() {
    let fixture = Fixture::new();
    let text = "[[steps]]\nname = \"a\"\nrun = \"true\"\ndepends_on = [\"nope\"]\n";
    let (line, message) = fixture.error(text);
    assert_eq!(line, 4);
    assert!(message.contains("\"nope\""), "{message}");
}

#[test]
fn dependency_cycle_is_listed() {
    let fixture = Fixture::new();
    let text = "[[steps]]\nname = \"a\"\nrun = \"true\"\ndepends_on = [\"b\"]\n\n[[steps]]\nname = \"b\"\nrun = \"true\"\ndepends_on = [\"a\"]\n";
    let (_, message) = fixture.error(text);
    assert!(message.contains("a -> b -> a"), "{message}");
}

#[test]
fn self_dependency_is_rejected() {
    let fixture = Fixture::new();
    let text = "[[steps]]\nname = \"a\"\nrun = \"true\"\ndepends_on = [\"a\"]\n";
    let (_, message) = fixture.error(text);
    assert!(message.contains("depends on itself"), "{message}");
}

#[test]
fn duplicate_names_across_steps_and_services() {
    let fixture = Fixture::new();
    let text = "[[steps]]\nname = \"db\"\nrun = \"true\"\n\n[[services]]\nname = \"db\"\nrun = \"sleep 9\"\n";
    let (line, message) = fixture.error(text);
    assert_eq!(line, 6);
    assert!(message.contains("duplicate name \"db\""), "{message}");
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn bad_duration_names_value() {
    let fixture = Fixture::new();
    let (line, message) = fixture.error("name = \"demo\"\nttl = \"forever\"\n");
    assert_eq!(line, 2);
    assert!(message.contains("\"forever\""), "{message}");
}

#[test]
fn zero_duration_is_rejected() {
    let fixture = Fixture::new();
    let (_, message) = fixture.error("[[steps]]\nname = \"a\"\nrun = \"true\"\ntimeout = \"0s\"\n");
    assert!(message.contains("longer than zero"), "{message}");
}

#[test]
fn probe_needs_exactly_one_kind() {
    let fixture = Fixture::new();
    let text = "[[services]]\nname = \"a\"\nrun = \"x\"\nready = { tcp = 1, command = \"true\" }\n";
    let (line, message) = fixture.error(text);
    assert_eq!(line, 4);
    assert!(message.contains("exactly one"), "{message}");
}

#[test]
fn http_probe_must_be_local() {
    let fixture = Fixture::new();
    let text = "[[services]]\nname = \"a\"\nrun = \"x\"\nready = { http = \"http://example.test/\" }\n";
    let (_, message) = fixture.error(text);
    assert!(message.contains("127.0.0.1"), "{message}");
}

#[test]
fn missing_dockerfile_is_named() {
    let fixture = Fixture::new();
    let (line, message) = fixture.error("[image]\ndockerfile = \"nope/Dockerfile\"\n");
    assert_eq!(line, 2);
    assert!(message.contains("nope/Dockerfile"), "{message}");
}

#[test]
fn invalid_memory_is_named() {
    let fixture = Fixture::new();
    let (line, message) = fixture.error("[resources]\nmemory = \"lots\"\n");
    assert_eq!(line, 2);
    assert!(message.contains("\"lots\""), "{message}");
}

#[test]
fn out_of_range_port_is_named() {
    let fixture = Fixture::new();
    let (line, message) = fixture.error("[[ports]]\nname = \"web\"\nport = 70000\n");
    assert_eq!(line, 3);
    assert!(message.contains("70000"), "{message}");
}

#[test]
fn url_with_password_is_rejected() {
    let fixture = Fixture::new();
    let (_, message) = fixture.error("[repository]\nurl = \"https://user:hunter2@git.example/x.git\"\n");
    assert!(message.contains("credential_env"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn invalid_project_name_is_named() {
    let fixture = Fixture::new();
    let (line, message) = fixture.error("name = \"Demo App\"\n");
    assert_eq!(line, 1);
    assert!(message.contains("Demo App"), "{message}");
}

#[test]
fn service_timeout_points_to_ready() {
    let fixture = Fixture::new();
    let (_, message) = fixture.error("[[services]]\nname = \"a\"\nrun = \"x\"\ntimeout = \"5s\"\n");
    assert!(message.contains("ready"), "{message}");
}

#[test]
fn seed_needs_one_source() {
    let fixture = Fixture::new();
    let (_, message) = fixture.error("[seed]\ndatabase = \"demo\"\n");
    assert!(message.contains("exactly one"), "{message}");
}

#[test]
fn extension_tables_keep_settings() {
    let fixture = Fixture::new();
    let manifest = fixture
        .parse("[harness]\nkind = \"opencode\"\nmodel = \"local/scripted\"\n")
        .unwrap();
    let harness = manifest.harness.unwrap();
    assert_eq!(harness.kind, "opencode");
    assert_eq!(harness.settings["model"].as_str(), Some("local/scripted"));
}

#[test]
fn memory_sizes_parse() {
    assert_eq!(parse_memory("512MiB"), Some(512 << 20));
    assert_eq!(parse_memory("2GiB"), Some(2 << 30));
    assert_eq!(parse_memory("1G"), Some(1_000_000_000));
    assert_eq!(parse_memory("1k"), None);
    assert_eq!(parse_memory("ten"), None);
}
