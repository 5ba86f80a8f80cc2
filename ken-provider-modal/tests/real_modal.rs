//! Opt-in test against the real Modal service.
//!
//! It runs only when all three are set:
//!
//! ```text
//! MODAL_TOKEN_ID=ak-...  MODAL_TOKEN_SECRET=as-...  KEN_MODAL_REAL=1 \
//!     cargo test -p ken-provider-modal --test real_modal -- --nocapture
//! ```
//!
//! Otherwise it prints why it skipped and passes without any network call; no
//! default run reaches Modal. The other settings come from the environment and
//! `~/.modal.toml` as for `ken --provider modal` (`MODAL_ENVIRONMENT`,
//! `MODAL_PROFILE`, ...). The token needs the right to create sandboxes in the
//! chosen environment.
//!
//! It works in the Modal app `ken-tests` (created if missing). It builds a small
//! Debian image and creates one sandbox with a TLS port. In it, it runs commands
//! (output, exit code, stdin, as user `nobody`), copies a file in and out, reads the
//! tunnel URL, lists the sandbox by its tags, and terminates it. The sandbox has a
//! 10 min time to live, so a failed run cannot leave it running for long. Expect
//! (an estimate) a few cents of usage and one to three minutes.

use std::time::Duration;

use ken_core::labels::{LabelSelector, Labels};
use ken_core::{EventSink, ExecRequest, ImageSpec, PortSpec, SandboxName, SandboxProvider, SandboxSpec};
use ken_provider_modal::{ModalConfig, ModalProvider};

/// The variable that must be `1` besides the credentials.
const OPT_IN_VAR: &str = "KEN_MODAL_REAL";

/// Returns the reason to skip, or `None` when the test should run.
fn skip_reason() -> Option<&'static str> {
    let set = |name: &str| std::env::var(name).map(|v| !v.trim().is_empty()).unwrap_or(false);
    let opted_in = std::env::var(OPT_IN_VAR).map(|v| v.trim() == "1").unwrap_or(false);
    if set("MODAL_TOKEN_ID") && set("MODAL_TOKEN_SECRET") && opted_in {
        None
    } else {
        Some("skipped: set MODAL_TOKEN_ID, MODAL_TOKEN_SECRET and KEN_MODAL_REAL=1 to run against real Modal")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_modal_sandbox_round_trip() {
    if let Some(reason) = skip_reason() {
        println!("{reason}");
        return;
    }
    let config = ModalConfig::from_env()
        .expect("Modal settings from the environment")
        .with_app_name("ken-tests");
    let provider = ModalProvider::connect(config).await.expect("connecting to Modal");

    let context = tempfile::tempdir().expect("a build context");
    let mut image_labels = Labels::new();
    image_labels.insert(ken_core::labels::MANAGED_BY, ken_core::labels::MANAGED_BY_VALUE);
    let image = provider
        .prepare_image(
            &ImageSpec {
                dockerfile: "FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*\n".to_owned(),
                context: context.path().to_owned(),
                extra_files: Default::default(),
                labels: image_labels,
            },
            &EventSink::none(),
        )
        .await
        .expect("image build on Modal");

    let name = SandboxName::new(format!("ken-real-{}", std::process::id())).unwrap();
    let ttl = Duration::from_secs(600);
    let port = PortSpec {
        name: "web".to_owned(),
        port: 8080,
        scheme: "http".to_owned(),
    };
    let spec = SandboxSpec {
        labels: Labels::for_sandbox(name.as_str(), "ken-real-modal-test", ttl),
        name: name.clone(),
        image,
        resources: Default::default(),
        env: [("KEN_REAL".to_owned(), "yes".to_owned())].into(),
        secret_env: Default::default(),
        ports: vec![port.clone()],
        workdir: Some("/srv".to_owned()),
        ttl,
    };
    let info = provider.create(&spec).await.expect("sandbox create on Modal");
    let result = async {
        let output = provider
            .exec(&name, ExecRequest::shell("pwd; printenv KEN_REAL; cat; exit 3").stdin(b"in\n".to_vec()))
            .await?
            .output()
            .await?;
        assert_eq!(output.stdout_text(), "/srv\nyes\nin\n");
        assert_eq!(output.status.code, Some(3));

        let nobody = provider
            .exec(&name, ExecRequest::new(["id", "-un"]).user("nobody"))
            .await?
            .output()
            .await?;
        assert_eq!(nobody.stdout_text(), "nobody\n");

        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        archive.append_data(&mut header, "note.txt", &b"hello"[..]).unwrap();
        provider
            .upload(&name, "/srv/in", archive.into_inner().unwrap().into())
            .await?;
        let back = provider.download(&name, "/srv/in/note.txt").await?;
        let mut entries = tar::Archive::new(&back[..]);
        let mut entry = entries.entries().unwrap().next().expect("one entry").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        assert_eq!(text, "hello");

        let endpoint = provider.endpoint(&name, &port).await?;
        println!("tunnel of port 8080: {}", endpoint.url);
        assert!(endpoint.url.as_str().starts_with("https://"), "{}", endpoint.url);

        let listed = provider
            .list(&LabelSelector::managed().with(ken_core::labels::SANDBOX, name.as_str()))
            .await?;
        assert!(listed.iter().any(|s| s.id == info.id), "{listed:?}");
        Ok::<_, ken_core::Error>(())
    }
    .await;
    let destroyed = provider.destroy(&name).await;
    result.expect("commands in the Modal sandbox");
    destroyed.expect("terminating the Modal sandbox");
    let gone = provider.get(&name).await;
    assert!(matches!(gone, Err(ref e) if e.is_not_found()), "{gone:?}");
}
