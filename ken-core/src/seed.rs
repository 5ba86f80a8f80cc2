//! The seeder trait and the built-in seeders: [`SqlSeeder`] pipes SQL files to
//! `psql` inside the sandbox, [`CommandSeeder`] runs a project command.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::exec::{ExecRequest, OutputStream};
use crate::manifest::{Manifest, SeedConfig};
use crate::plan::{exec_combined, tail_lines};
use crate::sandbox::Sandbox;

/// Loads data into a sandbox once its services are up.
#[async_trait]
pub trait Seeder: Send + Sync + fmt::Debug {
    /// Returns a short description, for example `sql: 2 files into demo`.
    fn describe(&self) -> String;

    /// Returns a hex digest of everything the seed depends on, so that a seeded state
    /// can be cached and reused while the inputs stay the same.
    async fn fingerprint(&self, sandbox: &Sandbox) -> Result<String>;

    /// Loads the data. A failure leaves the data source as it was, where the data
    /// source allows it (SQL runs in one transaction).
    async fn seed(&self, sandbox: &Sandbox) -> Result<()>;
}

/// Number of output lines shown when a seed fails.
const TAIL_LINES: usize = 30;

/// Returns the seeder that the `[seed]` table of `manifest` describes, or `None`
/// when there is none.
///
/// The seeder runs in [`Manifest::project_dir`] with the manifest's `env`, so call
/// this once the manifest's repository `subdir` is final (see
/// [`PreparedRepository::apply_to`](crate::repo::PreparedRepository::apply_to)).
///
/// # Errors
/// [`Error::InvalidInput`] for a seed with no SQL files, an empty database name or
/// an empty command.
pub fn seeder_for(manifest: &Manifest) -> Result<Option<Arc<dyn Seeder>>> {
    let Some(config) = &manifest.seed else {
        return Ok(None);
    };
    let workdir = manifest.project_dir();
    let seeder: Arc<dyn Seeder> = match config {
        SeedConfig::Sql {
            files,
            database,
            user,
        } => {
            if files.is_empty() {
                return Err(Error::invalid(
                    "seed.sql",
                    "[]",
                    "list at least one SQL file",
                ));
            }
            if database.is_empty() {
                return Err(Error::invalid(
                    "seed.database",
                    "",
                    "name the database to load the SQL files into",
                ));
            }
            let mut seeder = SqlSeeder::new(files.clone(), database.clone())
                .with_workdir(workdir)
                .with_env(manifest.env.clone());
            if let Some(user) = user {
                seeder = seeder.with_user(user.clone());
            }
            Arc::new(seeder)
        }
        SeedConfig::Command {
            command,
            inputs,
            user,
        } => {
            if command.trim().is_empty() {
                return Err(Error::invalid(
                    "seed.command",
                    command.clone(),
                    "give the shell command that loads the data",
                ));
            }
            let mut seeder = CommandSeeder::new(command.clone())
                .with_inputs(inputs.clone())
                .with_workdir(workdir)
                .with_env(manifest.env.clone());
            if let Some(user) = user {
                seeder = seeder.with_user(user.clone());
            }
            Arc::new(seeder)
        }
    };
    Ok(Some(seeder))
}

/// Loads SQL files from the host into a PostgreSQL database inside the sandbox.
///
/// The files are concatenated in order and piped as standard input to
/// `psql -v ON_ERROR_STOP=1 --single-transaction -X -q -d DATABASE -f -`, so the
/// first error stops the load and rolls all of it back. The image needs `psql`, and
/// the provider must support stdin for exec.
#[derive(Clone)]
pub struct SqlSeeder {
    files: Vec<PathBuf>,
    database: String,
    user: Option<String>,
    workdir: Option<String>,
    env: BTreeMap<String, String>,
}

impl SqlSeeder {
    /// Creates a seeder that loads `files`, paths on the host, into `database`.
    ///
    /// Until set otherwise, `psql` runs as the image's default user, in the
    /// sandbox's default working directory, with no extra environment.
    pub fn new(files: Vec<PathBuf>, database: impl Into<String>) -> Self {
        SqlSeeder {
            files,
            database: database.into(),
            user: None,
            workdir: None,
            env: BTreeMap::new(),
        }
    }

    /// Sets the OS user that runs `psql` inside the sandbox.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the working directory of `psql` inside the sandbox.
    pub fn with_workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Sets the environment of `psql`, for example `PGHOST` or `PGUSER`.
    pub fn with_env(mut self, env: BTreeMap<String, String>) -> Self {
        self.env = env;
        self
    }

    /// Returns the `psql` argument vector the seeder runs.
    pub fn command(&self) -> Vec<String> {
        let args = [
            "psql",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "-X",
            "-q",
            "-d",
        ];
        let mut command: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        command.extend([self.database.clone(), "-f".to_owned(), "-".to_owned()]);
        command
    }

    /// Reads every file from the host, with the name the fingerprint and error
    /// messages use for it.
    async fn read_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut files = Vec::with_capacity(self.files.len());
        for path in &self.files {
            let contents = tokio::fs::read(path).await.map_err(|e| {
                Error::io(format!("failed to read seed file {}", path.display()), e)
            })?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            files.push((name, contents));
        }
        Ok(files)
    }

    fn step_name(&self) -> String {
        format!("seed ({})", self.describe())
    }
}

impl fmt::Debug for SqlSeeder {
    // Environment values can be secrets, so only their names are printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlSeeder")
            .field("files", &self.files)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("workdir", &self.workdir)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[async_trait]
impl Seeder for SqlSeeder {
    fn describe(&self) -> String {
        let count = self.files.len();
        let files = if count == 1 { "file" } else { "files" };
        format!("sql: {count} {files} into {}", self.database)
    }

    /// Hashes the database, the user, and each file's name and contents, read on the
    /// host. The files' folders do not count, so two checkouts of the same project
    /// get the same fingerprint.
    async fn fingerprint(&self, _sandbox: &Sandbox) -> Result<String> {
        let files = self.read_files().await?;
        let mut hasher = FingerprintHasher::new("ken-seed-sql-v1");
        hasher.field(self.database.as_bytes());
        hasher.optional(self.user.as_deref());
        hasher.count(files.len());
        for (name, contents) in &files {
            hasher.field(name.as_bytes());
            hasher.field(contents);
        }
        Ok(hasher.finish())
    }

    async fn seed(&self, sandbox: &Sandbox) -> Result<()> {
        let started = Instant::now();
        let step = self.step_name();
        tracing::info!(sandbox.name = %sandbox.name(), phase = "seed", step = %step, "seeding started");
        let input = SqlInput::concatenate(self.read_files().await?);
        let mut request = ExecRequest::new(self.command()).stdin(Bytes::from(input.script.clone()));
        request.workdir = self.workdir.clone();
        request.user = self.user.clone();
        request.env = self.env.clone();
        let output = exec_combined(sandbox, request).await?;
        if !output.status.success() {
            tracing::warn!(sandbox.name = %sandbox.name(), phase = "seed", step = %step, status = %output.status, "seeding failed");
            return Err(Error::StepFailed {
                step,
                status: format!("psql: {}", output.status),
                log_tail: tail_lines(&input.relabel(&output.text), TAIL_LINES),
            });
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(sandbox.name = %sandbox.name(), phase = "seed", step = %step, duration_ms, "seeding finished");
        Ok(())
    }
}

/// The SQL files joined into one script, with the line where each file ends.
struct SqlInput {
    script: Vec<u8>,
    /// Each file's name and the first line of the script that belongs to the next
    /// file, in order.
    ends: Vec<(String, usize)>,
}

impl SqlInput {
    /// Joins `files`, adding a newline after a file that lacks one, so that a
    /// trailing `-- comment` cannot swallow the first line of the next file.
    fn concatenate(files: Vec<(String, Vec<u8>)>) -> Self {
        let mut script = Vec::new();
        let mut ends = Vec::with_capacity(files.len());
        let mut lines = 0;
        for (name, contents) in files {
            script.extend_from_slice(&contents);
            let mut file_lines = contents.iter().filter(|b| **b == b'\n').count();
            if !contents.is_empty() && !contents.ends_with(b"\n") {
                script.push(b'\n');
                file_lines += 1;
            }
            lines += file_lines;
            ends.push((name, lines + 1));
        }
        SqlInput { script, ends }
    }

    /// Maps line `line` (1-based) of the joined script to its file's name and line.
    fn locate(&self, line: usize) -> Option<(&str, usize)> {
        let mut first = 1;
        for (name, end) in &self.ends {
            if line < *end {
                return Some((name, line - first + 1));
            }
            first = *end;
        }
        None
    }

    /// Rewrites psql's `psql:<stdin>:LINE:` prefixes in `output` to
    /// `psql:FILE:LINE:`, so an error points into the file the user wrote.
    fn relabel(&self, output: &str) -> String {
        const PREFIX: &str = "psql:<stdin>:";
        let mut relabeled = String::with_capacity(output.len());
        for line in output.split_inclusive('\n') {
            let located = line.strip_prefix(PREFIX).and_then(|rest| {
                let (number, rest) = rest.split_once(':')?;
                let (file, file_line) = self.locate(number.parse().ok()?)?;
                Some(format!("psql:{file}:{file_line}:{rest}"))
            });
            relabeled.push_str(located.as_deref().unwrap_or(line));
        }
        relabeled
    }
}

/// Runs a project command inside the sandbox to load the data, for example
/// `bin/rails db:seed`.
#[derive(Clone)]
pub struct CommandSeeder {
    command: String,
    inputs: Vec<String>,
    user: Option<String>,
    workdir: Option<String>,
    env: BTreeMap<String, String>,
}

impl CommandSeeder {
    /// Creates a seeder that runs `command` with `sh -c`.
    ///
    /// Until set otherwise, it runs as the image's default user, in the sandbox's
    /// default working directory, with no extra environment and no inputs.
    pub fn new(command: impl Into<String>) -> Self {
        CommandSeeder {
            command: command.into(),
            inputs: Vec::new(),
            user: None,
            workdir: None,
            env: BTreeMap::new(),
        }
    }

    /// Sets the files, relative to the working directory inside the sandbox, whose
    /// contents the fingerprint covers.
    pub fn with_inputs(mut self, inputs: Vec<String>) -> Self {
        self.inputs = inputs;
        self
    }

    /// Sets the OS user that runs the command.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the working directory of the command and of reading the inputs.
    pub fn with_workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Sets the environment of the command.
    pub fn with_env(mut self, env: BTreeMap<String, String>) -> Self {
        self.env = env;
        self
    }

    /// Returns the SHA-256 of one input file, read inside the sandbox with `cat`
    /// and hashed as it streams in.
    async fn hash_input(&self, sandbox: &Sandbox, input: &str) -> Result<[u8; 32]> {
        let mut request =
            ExecRequest::shell(r#"exec cat -- "$KEN_SEED_INPUT""#).env("KEN_SEED_INPUT", input);
        request.workdir = self.workdir.clone();
        request.user = self.user.clone();
        let mut process = sandbox.exec(request).await?;
        let mut hasher = Sha256::new();
        let mut errors = Vec::new();
        while let Some(chunk) = process.next_chunk().await {
            let chunk = chunk?;
            match chunk.stream {
                OutputStream::Stdout => hasher.update(&chunk.bytes),
                OutputStream::Stderr => errors.extend_from_slice(&chunk.bytes),
            }
        }
        let status = process.finish().await?;
        if !status.success() {
            let workdir = self
                .workdir
                .as_deref()
                .unwrap_or("the default working directory");
            let message = String::from_utf8_lossy(&errors);
            tracing::warn!(sandbox.name = %sandbox.name(), phase = "seed", step = %self.step_name(), input, %status, "failed to read a seed input");
            return Err(Error::invalid(
                "seed input",
                input,
                format!(
                    "it cannot be read in {workdir} inside the sandbox ({}); `inputs` lists files relative to the project directory",
                    message.trim()
                ),
            ));
        }
        Ok(hasher.finalize().into())
    }

    fn step_name(&self) -> String {
        format!("seed ({})", self.describe())
    }
}

impl fmt::Debug for CommandSeeder {
    // Environment values can be secrets, so only their names are printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandSeeder")
            .field("command", &self.command)
            .field("inputs", &self.inputs)
            .field("user", &self.user)
            .field("workdir", &self.workdir)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[async_trait]
impl Seeder for CommandSeeder {
    fn describe(&self) -> String {
        const MAX_CHARS: usize = 60;
        let first_line = self.command.trim().lines().next().unwrap_or_default();
        let mut summary: String = first_line.chars().take(MAX_CHARS).collect();
        if summary.len() < self.command.trim().len() {
            summary.push_str("...");
        }
        format!("command: {summary}")
    }

    /// Hashes the command, the user, and each input's name and contents, read inside
    /// the sandbox.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming an input that does not exist or cannot be read.
    async fn fingerprint(&self, sandbox: &Sandbox) -> Result<String> {
        let mut hasher = FingerprintHasher::new("ken-seed-command-v1");
        hasher.field(self.command.as_bytes());
        hasher.optional(self.user.as_deref());
        hasher.count(self.inputs.len());
        for input in &self.inputs {
            hasher.field(input.as_bytes());
            hasher.field(&self.hash_input(sandbox, input).await?);
        }
        Ok(hasher.finish())
    }

    async fn seed(&self, sandbox: &Sandbox) -> Result<()> {
        let started = Instant::now();
        let step = self.step_name();
        tracing::info!(sandbox.name = %sandbox.name(), phase = "seed", step = %step, "seeding started");
        let mut request = ExecRequest::shell(self.command.clone());
        request.workdir = self.workdir.clone();
        request.user = self.user.clone();
        request.env = self.env.clone();
        let output = exec_combined(sandbox, request).await?;
        if !output.status.success() {
            tracing::warn!(sandbox.name = %sandbox.name(), phase = "seed", step = %step, status = %output.status, "seeding failed");
            return Err(Error::StepFailed {
                step,
                status: output.status.to_string(),
                log_tail: tail_lines(&output.text, TAIL_LINES),
            });
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(sandbox.name = %sandbox.name(), phase = "seed", step = %step, duration_ms, "seeding finished");
        Ok(())
    }
}

/// A SHA-256 over length-prefixed fields, so that two different lists of fields
/// never feed the same bytes to the hash.
struct FingerprintHasher(Sha256);

impl FingerprintHasher {
    /// Starts a hash whose first field names the kind of seed and its version.
    fn new(kind: &str) -> Self {
        let mut hasher = FingerprintHasher(Sha256::new());
        hasher.field(kind.as_bytes());
        hasher
    }

    fn field(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.update(bytes);
    }

    fn count(&mut self, count: usize) {
        self.0.update((count as u64).to_le_bytes());
    }

    fn optional(&mut self, value: Option<&str>) {
        match value {
            Some(value) => {
                self.0.update([1]);
                self.field(value.as_bytes());
            }
            None => self.0.update([0]),
        }
    }

    fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

#[cfg(test)]
mod tests;
