//! The `writ` command line (feature `cli`): parses the arguments and runs
//! one command over the library. `src/main.rs` only calls [`main`].

// Output goes through these instead of std's macros, which panic when the
// reader goes away (`writ eval ... | head`); a closed pipe is not an error.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::engine::DEFAULT_PACK;
use crate::explain::{explain, Style};
use crate::fixture;

mod grants;
mod review;
use crate::{Engine, Request};
use grants::{run_grants, GrantsCommand};

/// writ decides whether a non-human identity may be issued a short-lived
/// credential, with which scope, for how long and under which obligations.
#[derive(Debug, Parser)]
#[command(name = "writ", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The shape of `writ eval`'s request.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Input {
    /// writ's own request (docs/language.md).
    Writ,
    /// An OpenID AuthZEN Access Evaluation request (`subject`, `action`,
    /// `resource`, `context`), mapped as `writ serve` maps
    /// `/access/v1/evaluation` (docs/server.md).
    Authzen,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Json,
    Text,
}

#[derive(Debug, clap::Args)]
struct PolicyArgs {
    /// Policy file or directory (repeatable); `default` is the embedded
    /// pack. With none, the embedded pack is used.
    #[arg(long = "policy", short = 'p', value_name = "PATH")]
    policies: Vec<String>,
    /// JSON data file: overrides constants by name, adds data by path.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct IdentityArgs {
    /// Trust file (JSON, docs/identity.md): verify `subject.token` against
    /// the issuers it lists.
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// The time token lifetimes are checked at (RFC 3339), instead of the
    /// clock: for deterministic fixtures and examples.
    #[arg(long, value_name = "TIME", requires = "trust")]
    at: Option<String>,
}

impl IdentityArgs {
    fn load(&self) -> Result<Option<(crate::identity::Trust, i64)>, String> {
        let Some(path) = &self.trust else {
            return Ok(None);
        };
        let trust = crate::identity::Trust::load(path).map_err(|e| e.to_string())?;
        let now = match &self.at {
            None => crate::identity::Trust::now(),
            Some(text) => crate::request::parse_time(text)
                .and_then(|nanos| i64::try_from(nanos.div_euclid(1_000_000_000)).ok())
                .ok_or_else(|| format!("`--at {text}` is not an RFC 3339 time"))?,
        };
        Ok(Some((trust, now)))
    }
}

#[derive(Debug, Subcommand)]
// Parsed once per run: the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Decide one request. Exits 0 on allow, 1 on deny, 2 on error.
    Eval {
        #[command(flatten)]
        policy: PolicyArgs,
        /// The request JSON file, or `-` for stdin.
        #[arg(long, short = 'r', value_name = "FILE|-")]
        request: String,
        /// The shape of the request.
        #[arg(long, value_enum, default_value = "writ")]
        input: Input,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Explain the decision step by step (text).
        #[arg(long)]
        explain: bool,
        #[command(flatten)]
        identity: IdentityArgs,
    },
    /// Check policy files. Exits 0 when clean, 1 on diagnostics.
    Check {
        /// Files or directories (`default` for the embedded pack).
        #[arg(required = true)]
        paths: Vec<String>,
        /// JSON data file the policies are checked against.
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Print the compiled decision tree.
    Tree {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Graphviz DOT instead of text.
        #[arg(long)]
        dot: bool,
        /// SVG drawn by Graphviz (`dot` must be on the PATH).
        #[arg(long, conflicts_with = "dot")]
        svg: bool,
    },
    /// Run fixture files (docs/testing.md) and report `N passed, M failed`.
    Test {
        /// Fixture files or directories (default: `tests/`).
        paths: Vec<PathBuf>,
        /// Report how many cases matched each rule (a rule that matched
        /// only by failing closed on an error is not counted).
        #[arg(long)]
        coverage: bool,
        /// Exit 1 when fewer than PERCENT of the rules are exercised
        /// (implies `--coverage`).
        #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
        threshold: Option<f64>,
        #[command(flatten)]
        identity: IdentityArgs,
    },
    /// Lint policy files: rules that compile but are probably mistakes.
    /// Exits 0 when clean, 1 on findings, 2 when the policies do not compile.
    Lint {
        /// Files or directories (`default` for the embedded pack).
        #[arg(required = true)]
        paths: Vec<String>,
        /// JSON data file the policies are compiled with.
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
        /// A lint's level, `CODE=allow|warn|deny` (repeatable): `allow`
        /// hides its findings, `warn` reports them without failing, `deny`
        /// (every lint's default) reports them and exits 1.
        #[arg(long = "level", value_name = "CODE=LEVEL")]
        levels: Vec<String>,
    },
    /// Format policy files in place, in the one canonical layout.
    Fmt {
        /// Print a unified diff for each file that is not formatted (exit
        /// 1) instead of rewriting it.
        #[arg(long)]
        check: bool,
        /// Files or directories (every `.writ` file below), or `-` to
        /// format stdin to stdout.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Work with the embedded default pack.
    Pack {
        #[command(subcommand)]
        command: PackCommand,
    },
    /// Serve decisions over HTTP until SIGTERM (see docs/server.md).
    Serve(ServeArgs),
    /// Write DIR/writ.manifest: the SHA-256 of every `.writ` file below
    /// DIR, so that `writ serve` activates the set only when it matches.
    Manifest {
        /// The policy directory.
        dir: PathBuf,
    },
    /// Build, sign, verify and push policy bundles (see docs/fleet.md).
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Work with the grant ledger (see docs/lifecycle.md).
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// A language server for `.writ` files over stdio, for editors (see
    /// docs/editors.md). Exits 0 after `shutdown` and `exit`, else 1.
    Lsp,
    /// Serve the playground: a page to edit a policy and a request and see
    /// the diagnostics, decision, explanation and tree as you type (see
    /// docs/editors.md). Until Ctrl-C or SIGTERM.
    Playground {
        /// Address to listen on (loopback unless you mean otherwise).
        #[arg(long, default_value = "127.0.0.1:8182", value_name = "HOST:PORT")]
        addr: std::net::SocketAddr,
    },
    /// Read and revoke the grants in a ledger (see docs/lifecycle.md).
    /// Exits 0 when done, 1 when the grant is not there, 2 on error.
    Grants {
        #[command(subcommand)]
        command: GrantsCommand,
    },
    /// Re-decide every request of a decision log under another policy set
    /// and report what decides differently (see docs/review.md). Exits 1
    /// when `--fail-on` is met, 0 otherwise, 2 on bad input.
    Replay(ReplayArgs),
    /// Compare two policy sets over all requests: each class of requests
    /// they decide differently, with a witness (see docs/review.md). Exits
    /// 1 when `--fail-on` is met, 0 otherwise, 2 on bad input.
    Diff(review::DiffArgs),
    /// Ask a policy set a question over all requests; answers with a
    /// witness request and its trace, or none (see docs/review.md). Exits
    /// 0 with a witness, 1 with none, 2 on bad input.
    Query(review::QueryArgs),
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// The decision log (`writ serve --decision-log`), or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    log: String,
    /// The new policy set: file or directory (repeatable; `default` is the
    /// embedded pack).
    #[arg(long = "policy", short = 'p', value_name = "PATH", required = true)]
    policies: Vec<String>,
    /// Compare with decisions under this old set instead of the logged
    /// decisions (repeatable).
    #[arg(long = "policy-old", value_name = "PATH")]
    old: Vec<String>,
    /// JSON data file both sets are compiled with.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    format: ReplayFormat,
    /// When to exit 1.
    #[arg(long, value_enum, default_value = "widen")]
    fail_on: ReplayFailOn,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ReplayFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ReplayFailOn {
    /// When any decision allows more than before.
    Widen,
    /// When any decision changes.
    Change,
    /// Never.
    None,
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Pack the `.writ` files below DIR (as `policies/...`), the data file
    /// and a manifest into one tar.gz archive.
    Build {
        /// The policy directory.
        dir: PathBuf,
        /// The JSON data file, packed as `data.json`.
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
        /// The revision the manifest names [default: the policy digest's
        /// first 12 hex digits].
        #[arg(long, value_name = "REV")]
        revision: Option<String>,
        /// The archive to write.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
    },
    /// Sign a bundle's manifest with an Ed25519 private key (PKCS#8 PEM),
    /// in place unless `-o` is given.
    Sign {
        /// The bundle.
        file: PathBuf,
        /// The private key (`openssl genpkey -algorithm ed25519`).
        #[arg(long, value_name = "PEM")]
        key: PathBuf,
        /// Write the signed bundle here instead.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Publish a bundle to an OCI registry (`oci://registry/repository:tag`)
    /// as an OCI artifact; it is checked first, against `--pub` keys if
    /// given.
    Push {
        /// The bundle.
        file: PathBuf,
        /// `oci://registry[:port]/repository:tag`.
        reference: String,
        /// A trusted Ed25519 public key (PEM); repeatable.
        #[arg(long = "pub", value_name = "PEM")]
        keys: Vec<PathBuf>,
    },
    /// Check a bundle as `writ serve --bundle` does. Exits 0 when it is
    /// good, 1 when it is refused, 2 on error.
    Verify {
        /// The bundle.
        file: PathBuf,
        /// A trusted Ed25519 public key (PEM); repeatable. With one, an
        /// unsigned bundle is refused.
        #[arg(long = "pub", value_name = "PEM")]
        keys: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Apply the schema migrations not applied yet, and print the schema
    /// version.
    Migrate {
        /// A SQLite file or a `postgres://` URL.
        #[arg(long, value_name = "FILE|URL")]
        ledger: String,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8181", value_name = "HOST:PORT")]
    addr: std::net::SocketAddr,
    /// Append one JSON line per decision to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE|-")]
    decision_log: Option<String>,
    /// With a decision log: answer 503 instead of a decision whose line
    /// cannot be written, and turn `/ready` off until writes succeed
    /// (`--decision-log-required=false` answers and loses the line).
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    decision_log_required: bool,
    /// Ship the decision log to an HTTP collector too (or only): batches of
    /// JSON lines, POSTed as `application/x-ndjson` (docs/fleet.md).
    #[arg(long, value_name = "URL")]
    decision_log_url: Option<String>,
    /// Most lines in one POST to the collector.
    #[arg(
        long,
        default_value_t = 500,
        value_name = "LINES",
        requires = "decision_log_url"
    )]
    decision_log_batch: usize,
    /// How long a line may wait for its batch to fill before it is sent
    /// (best-effort mode; a required log sends at once).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION", requires = "decision_log_url")]
    decision_log_interval: std::time::Duration,
    /// Most lines held for the collector while it is down or slow; more
    /// are dropped (and counted).
    #[arg(
        long,
        default_value_t = 10_000,
        value_name = "LINES",
        requires = "decision_log_url"
    )]
    decision_log_buffer: usize,
    /// With a decision log: fdatasync each group of lines before answering,
    /// so that an answered decision survives a crash of the machine.
    #[arg(long)]
    decision_log_sync: bool,
    /// Connections the kernel queues before the server accepts them
    /// (capped by net.core.somaxconn).
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65535))]
    backlog: u32,
    /// Replace a request field with `[redacted]` in the decision log
    /// (repeatable), e.g. `subject.id`.
    #[arg(long = "redact", value_name = "PATH")]
    redact: Vec<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = crate::request::MAX_REQUEST_BYTES, value_name = "BYTES")]
    max_body: usize,
    /// Trust file (JSON, docs/identity.md): verify `subject.token` against
    /// the issuers it lists, on the server's clock.
    #[arg(long, value_name = "FILE")]
    trust: Option<PathBuf>,
    /// How long a client may take to send its request (`10s`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    request_timeout: std::time::Duration,
    /// How often to look for changed policy files (`0s` turns it off).
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    watch_interval: std::time::Duration,
    /// How long changed policy files must stay unchanged before the
    /// watcher reads them as a new set.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    reload_settle: std::time::Duration,
    /// How long the watcher waits for changing files to settle before it
    /// reports a failed reload (it goes on waiting).
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    reload_max_wait: std::time::Duration,
    /// How long shutdown waits for requests in flight.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    shutdown_grace: std::time::Duration,
    /// After SIGTERM, keep serving this long with `/ready` answering 503.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    drain_delay: std::time::Duration,
    /// Worker threads, 1 to 1024 [default: one per CPU the process may use].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Pin each worker thread to a CPU of its own (for a server with
    /// dedicated CPUs; see docs/server.md).
    #[arg(long)]
    pin_workers: bool,
    /// Keep the grants it allows through `POST /v1/grants` in this ledger:
    /// a SQLite file, or a `postgres://` URL for a fleet (docs/lifecycle.md).
    #[arg(long, value_name = "FILE|URL")]
    ledger: Option<String>,
    /// How far back `POST /v1/grants` counts a subject's issuances
    /// (`context.recent_issuances`).
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    repeat_window: std::time::Duration,
    /// How long the ledger keeps grants past their expiry or revocation,
    /// stored idempotent answers and revocation feed rows before a
    /// periodic sweep deletes them (docs/lifecycle.md, "Retention").
    #[arg(long, default_value = "7d", value_parser = parse_duration, value_name = "DURATION")]
    retention: std::time::Duration,
    /// Push every revocation and narrowing of the ledger's feed to this
    /// URL as a Security Event Token (RFC 8417, CAEP event types), retried
    /// until acknowledged (docs/lifecycle.md). A bearer token for it is
    /// read from the environment variable `WRIT_WEBHOOK_TOKEN`.
    #[arg(long, value_name = "URL", requires = "ledger")]
    revocation_webhook: Option<String>,
    /// Sign the webhook's SETs with this PKCS#8 PEM private key (Ed25519 or
    /// EC P-256) [default: unsigned, `alg: none`].
    #[arg(long, value_name = "FILE", requires = "revocation_webhook")]
    webhook_key: Option<PathBuf>,
    /// The webhook SETs' `iss`.
    #[arg(
        long,
        default_value = "writ",
        value_name = "NAME",
        requires = "revocation_webhook"
    )]
    webhook_issuer: String,
    /// The webhook SETs' `aud` [default: the webhook's URL].
    #[arg(long, value_name = "AUD", requires = "revocation_webhook")]
    webhook_audience: Option<String>,
    /// How long one webhook delivery may take before it is retried.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    webhook_timeout: std::time::Duration,
    /// The longest wait between two tries of a delivery.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    webhook_max_backoff: std::time::Duration,
    /// The AuthZEN PDP identifier `/.well-known/authzen-configuration`
    /// names (`https://pdp.example.com`) [default: `http://` and the
    /// request's Host].
    #[arg(long, value_name = "URL")]
    authzen_pdp: Option<String>,
    /// Serve the policy bundle at URL (`http://` or `https://`, built with
    /// `writ bundle build`) instead of `--policy` and `--data`, polled
    /// for new revisions (see docs/fleet.md).
    #[arg(long, value_name = "URL", conflicts_with_all = ["policies", "data"])]
    bundle: Option<String>,
    /// How often to poll the bundle's source.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION", requires = "bundle")]
    bundle_poll: std::time::Duration,
    /// How long one fetch from the bundle's source may take; a replica
    /// whose source hangs at start waits this long, then starts from
    /// `--bundle-cache`.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION", requires = "bundle")]
    bundle_timeout: std::time::Duration,
    /// Keep the last good bundle in DIR, to start from when the source is
    /// down.
    #[arg(long, value_name = "DIR", requires = "bundle")]
    bundle_cache: Option<PathBuf>,
    /// A trusted Ed25519 public key (PEM); repeatable. With one, only
    /// bundles signed by a trusted key are activated.
    #[arg(long = "bundle-key", value_name = "PEM", requires = "bundle")]
    bundle_keys: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum PackCommand {
    /// Print the pack's files.
    Show,
    /// List the pack's files.
    List,
}

/// Runs the command line with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn color_stdout() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

fn color_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// The `--data` file, read as the server and the fixtures read data: a
/// duplicate key is refused and a byte order mark skipped.
fn read_data(path: Option<&Path>) -> Result<Option<Value>, String> {
    match path {
        None => Ok(None),
        Some(path) if path == Path::new("-") => {
            let text = read_input("-")?;
            crate::load::parse_data("-", text.as_bytes()).map(Some)
        }
        Some(path) => crate::load::read_data(path).map(Some),
    }
}

/// Reads a file, or stdin for `-`, refusing inputs over the size limit.
fn read_input(path: &str) -> Result<String, String> {
    use crate::source::{read_limited, MAX_INPUT_BYTES};
    if path == "-" {
        read_limited(std::io::stdin(), path, MAX_INPUT_BYTES)
    } else {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
        read_limited(file, path, MAX_INPUT_BYTES)
    }
}

/// Reads a request file (or stdin) under the same size limit as the
/// server's default `--max-body`; the JSON reader does the rest.
fn read_request(path: &str) -> Result<String, String> {
    use crate::request::MAX_REQUEST_BYTES;
    use crate::source::read_limited;
    let limit = MAX_REQUEST_BYTES as u64;
    if path == "-" {
        read_limited(std::io::stdin(), path, limit)
    } else {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
        read_limited(file, path, limit)
    }
}

fn compile(policy: &PolicyArgs) -> Result<Engine, String> {
    let files = crate::load::load_policies(&policy.policies, Path::new("."))?;
    let data = read_data(policy.data.as_deref())?;
    Engine::compile(files, data.as_ref()).map_err(|d| {
        format!(
            "the policies do not compile ({} diagnostics):\n{}",
            d.len(),
            d.render(color_stderr())
        )
    })
}

fn read_bundle(path: &Path) -> Result<Vec<u8>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if meta.len() > crate::bundle::MAX_BUNDLE_BYTES {
        return Err(format!(
            "`{}`: {}",
            path.display(),
            crate::bundle::BundleError::TooLarge
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

fn run_bundle(command: BundleCommand) -> Result<u8, String> {
    match command {
        BundleCommand::Build {
            dir,
            data,
            revision,
            output,
        } => {
            let archive = crate::bundle::build(&dir, data.as_deref(), revision.as_deref())
                .map_err(|e| e.to_string())?;
            crate::bundle::write_atomically(&output, &archive)?;
            let bundle = crate::bundle::open(&archive, &[]).map_err(|e| e.to_string())?;
            eprintln!(
                "wrote `{}`: revision {}, {} file(s), {}",
                output.display(),
                bundle.manifest.revision,
                bundle.manifest.files.len(),
                bundle.manifest.policy_digest
            );
            Ok(0)
        }
        BundleCommand::Sign { file, key, output } => {
            let archive = read_bundle(&file)?;
            let signed = crate::bundle::sign(&archive, &key)
                .map_err(|e| format!("`{}`: {e}", file.display()))?;
            let target = output.unwrap_or(file);
            crate::bundle::write_atomically(&target, &signed)?;
            eprintln!(
                "signed `{}` with key {}",
                target.display(),
                crate::bundle::key_fingerprint(&key).map_err(|e| e.to_string())?
            );
            Ok(0)
        }
        BundleCommand::Push {
            file,
            reference,
            keys,
        } => {
            let reference = crate::server::oci::Reference::parse(&reference)?;
            let keys = keys
                .iter()
                .map(|path| crate::bundle::TrustedKey::read(path))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let archive = read_bundle(&file)?;
            let bundle = crate::bundle::open(&archive, &keys)
                .map_err(|e| format!("`{}` refused: {e}", file.display()))?;
            let registry = crate::server::oci::Registry::new(
                &reference,
                &crate::server::oci::ProcessEnv,
                std::time::Duration::from_secs(60),
            )?;
            let digest = registry
                .push(&archive, &bundle.manifest_bytes)
                .map_err(|e| format!("pushing to `{reference}`: {e}"))?;
            eprintln!(
                "pushed revision {} to `{reference}` ({digest})",
                bundle.manifest.revision
            );
            Ok(0)
        }
        BundleCommand::Verify { file, keys } => {
            let keys = keys
                .iter()
                .map(|path| crate::bundle::TrustedKey::read(path))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let archive = read_bundle(&file)?;
            match crate::bundle::open(&archive, &keys) {
                Ok(bundle) => {
                    let manifest = &bundle.manifest;
                    println!(
                        "{}",
                        serde_json::json!({
                            "status": "verified",
                            "revision": manifest.revision,
                            "policy_digest": manifest.policy_digest,
                            "writ_version": manifest.writ_version,
                            "format": manifest.format,
                            "files": manifest.files.len(),
                            "signed": bundle.signature.is_some(),
                            "signed_by": bundle.signed_by,
                            "digest": bundle.archive_digest,
                        })
                    );
                    Ok(0)
                }
                Err(error) => {
                    eprintln!("writ: `{}` refused: {error}", file.display());
                    Ok(1)
                }
            }
        }
    }
}

fn run(cli: Cli) -> Result<u8, String> {
    match cli.command {
        Command::Eval {
            policy,
            request,
            input,
            format,
            explain: want_explain,
            identity,
        } => {
            let engine = compile(&policy)?;
            let trust = identity.load()?;
            let text = read_request(&request)?;
            let request = match input {
                Input::Writ => Request::from_json(&text).map_err(|e| e.to_string())?,
                Input::Authzen => authzen_request(&text)?,
            };
            let decision = match &trust {
                Some((trust, now)) => trust.decide(&engine, &request, *now),
                None => engine.decide(&request),
            };
            if want_explain {
                print!(
                    "{}",
                    explain(&decision, &engine, Style::new(color_stdout()))
                );
            } else if format == Format::Json {
                println!("{}", decision.to_json_pretty());
            } else {
                println!(
                    "{} scope=[{}] ttl={} obligations=[{}] reasons=[{}]",
                    if decision.is_allow() { "allow" } else { "deny" },
                    decision.scope.join(", "),
                    decision.ttl,
                    decision
                        .obligations
                        .iter()
                        .map(|o| o.kind.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    decision.reasons.join(", ")
                );
            }
            Ok(if decision.is_allow() { 0 } else { 1 })
        }
        Command::Check {
            paths,
            data,
            format,
        } => {
            let files = crate::load::load_policies(&paths, Path::new("."))?;
            let data = read_data(data.as_deref())?;
            let count = files.len();
            match Engine::compile(files, data.as_ref()) {
                Ok(engine) => {
                    if format == Format::Json {
                        println!("[]");
                    } else {
                        println!(
                            "ok: {count} file(s), {} rule(s), no diagnostics",
                            engine.policy().rules.len()
                        );
                        // Undeclared attributes that look like typos are
                        // worth a warning even here (they never fail).
                        let typos = crate::lint::undeclared_attributes(&engine);
                        if !typos.is_empty() {
                            eprint!(
                                "{}",
                                crate::lint::diagnostics(&engine, &typos).render(color_stderr())
                            );
                            eprintln!(
                                "{} warning(s); `writ lint` has the other lints",
                                typos.len()
                            );
                        }
                    }
                    Ok(0)
                }
                Err(diagnostics) => {
                    if format == Format::Json {
                        println!("{}", diagnostics.to_json());
                    } else {
                        eprint!("{}", diagnostics.render(color_stderr()));
                        eprintln!("{} diagnostic(s)", diagnostics.len());
                    }
                    Ok(1)
                }
            }
        }
        Command::Tree { policy, dot, svg } => {
            let engine = compile(&policy)?;
            if svg {
                print!("{}", dot_to_svg(&engine.tree().to_dot(engine.policy()))?);
            } else if dot {
                print!("{}", engine.tree().to_dot(engine.policy()));
            } else {
                print!("{}", engine.tree().render(engine.policy()));
            }
            Ok(0)
        }
        Command::Test {
            paths,
            coverage,
            threshold,
            identity,
        } => {
            let trust = identity.load()?;
            let paths = if paths.is_empty() {
                vec![PathBuf::from("tests")]
            } else {
                paths
            };
            let files = fixture::discover(&paths)?;
            if files.is_empty() {
                return Err("no fixture files (`*.json`) found".to_owned());
            }
            let report = fixture::run_with(&files, trust.as_ref().map(|(t, now)| (t, *now)));
            let options = fixture::Options {
                coverage,
                threshold,
            };
            print!("{}", fixture::render_with(&report, options));
            let below = threshold.is_some_and(|min| report.coverage_percent() < min);
            Ok(if report.failed() == 0 && !below { 0 } else { 1 })
        }
        Command::Serve(args) => {
            let mut config = crate::server::Config::new();
            config.policies = args.policy.policies;
            config.data = args.policy.data;
            config.addr = args.addr;
            config.decision_log = args.decision_log;
            config.decision_log_ship = args.decision_log_url.map(|url| {
                let mut ship = crate::server::logship::ShipConfig::new(&url);
                ship.batch = args.decision_log_batch;
                ship.interval = args.decision_log_interval;
                ship.buffer = args.decision_log_buffer;
                ship
            });
            config.decision_log_required = args.decision_log_required;
            config.decision_log_sync = args.decision_log_sync;
            config.backlog = args.backlog;
            config.redact = args.redact;
            config.max_body = args.max_body;
            config.request_timeout = args.request_timeout;
            config.trust = args.trust;
            config.watch_interval = args.watch_interval;
            config.reload_settle = args.reload_settle;
            config.reload_max_wait = args.reload_max_wait;
            config.shutdown_grace = args.shutdown_grace;
            config.drain_delay = args.drain_delay;
            config.workers = args.workers.map(usize::from);
            config.pin_workers = args.pin_workers;
            config.ledger = args.ledger;
            config.repeat_window = args.repeat_window;
            config.retention = args.retention;
            config.webhook = args.revocation_webhook.map(|url| {
                let mut webhook = crate::server::webhook::WebhookConfig::new(&url);
                webhook.key = args.webhook_key;
                webhook.issuer = args.webhook_issuer;
                webhook.audience = args.webhook_audience;
                webhook.bearer = std::env::var("WRIT_WEBHOOK_TOKEN")
                    .ok()
                    .filter(|token| !token.is_empty());
                webhook.timeout = args.webhook_timeout;
                webhook.max_backoff = args.webhook_max_backoff;
                webhook
            });
            config.authzen_pdp = args.authzen_pdp;
            config.bundle = args.bundle.map(|url| {
                let mut bundle = crate::server::bundle_pull::BundleConfig::new(&url);
                bundle.poll = args.bundle_poll;
                bundle.timeout = args.bundle_timeout;
                bundle.cache = args.bundle_cache;
                bundle.keys = args.bundle_keys;
                bundle
            });
            crate::server::run(config)?;
            Ok(0)
        }
        Command::Manifest { dir } => {
            let text = crate::server::write_manifest(&dir)?;
            eprintln!(
                "wrote `{}` ({} file(s))",
                dir.join("writ.manifest").display(),
                text.lines().count()
            );
            Ok(0)
        }
        Command::Bundle { command } => run_bundle(command),
        Command::Ledger {
            command: LedgerCommand::Migrate { ledger },
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            runtime.block_on(async {
                let opened = crate::ledger::Ledger::open(&ledger)
                    .await
                    .map_err(|e| format!("`--ledger {ledger}`: {e}"))?;
                // Opening migrates when the database answers; this says
                // whether it did.
                opened
                    .migrate()
                    .await
                    .map_err(|e| format!("`--ledger {ledger}`: {e}"))?;
                eprintln!(
                    "writ: the {} ledger `{}` is at schema version {}",
                    opened.kind(),
                    opened.target(),
                    crate::ledger::SCHEMA_VERSION
                );
                Ok::<u8, String>(0)
            })
        }
        Command::Grants { command } => run_grants(command),
        Command::Lsp => Ok(crate::lsp::run()),
        Command::Playground { addr } => crate::playground::run(addr).map(|()| 0),
        Command::Replay(args) => run_replay(&args),
        Command::Diff(args) => review::run_diff(&args),
        Command::Query(args) => review::run_query(&args),
        Command::Fmt { check, paths } => run_fmt(&paths, check),
        Command::Lint {
            paths,
            data,
            levels,
        } => {
            let levels = crate::lint::Levels::parse(&levels)?;
            let engine = compile(&PolicyArgs {
                policies: paths,
                data,
            })?;
            let mut findings = crate::lint::lint(&engine);
            findings.retain(|f| levels.of(&f.lint.code_name()) != crate::lint::Level::Allow);
            let failing = findings
                .iter()
                .any(|f| levels.of(&f.lint.code_name()) == crate::lint::Level::Deny);
            if findings.is_empty() {
                eprintln!(
                    "ok: {} rule(s), no lint findings",
                    engine.policy().rules.len()
                );
                return Ok(0);
            }
            eprint!(
                "{}",
                crate::lint::diagnostics(&engine, &findings).render(color_stderr())
            );
            eprintln!("{} finding(s)", findings.len());
            Ok(u8::from(failing))
        }
        Command::Pack { command } => {
            for (name, text) in DEFAULT_PACK {
                match command {
                    PackCommand::List => println!("{name}"),
                    PackCommand::Show => println!("// ==== {name} ====\n{text}"),
                }
            }
            Ok(0)
        }
    }
}

/// `10s`, `500ms`, `2m`, `1h30m`: a duration for `writ serve`'s options,
/// read by the parser of the policy language's durations (bare digits are
/// seconds).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    use crate::duration::{parse_millis, DurationError};
    let text = text.trim();
    match parse_millis(text) {
        Ok(millis) => u64::try_from(millis)
            .map(std::time::Duration::from_millis)
            .map_err(|_| format!("`{text}` is too long a duration")),
        Err(DurationError::Overflow) => Err(format!("`{text}` is too long a duration")),
        Err(DurationError::Syntax) => Err(format!(
            "`{text}` is not a duration; write it like `10s`, `500ms` or `1h30m` (units `ms`, `s`, `m`, `h`, `d`)"
        )),
    }
}

/// An AuthZEN Access Evaluation request as writ's request, by the
/// server's own mapping (duplicate keys refused as everywhere).
fn authzen_request(text: &str) -> Result<Request, String> {
    use crate::request::json::{read_str, Limits};
    use crate::server::authzen::{to_request, Parts};
    let value = read_str(text, Limits::REQUEST).map_err(|e| e.to_string())?;
    let Value::Object(object) = value else {
        return Err(format!(
            "an AuthZEN request is a JSON object with `subject`, `action` and `resource`, found {}",
            crate::request::json_kind(&value)
        ));
    };
    if object.contains_key("evaluations") {
        return Err(
            "`writ eval --input authzen` decides one evaluation; send `subject`, `action`, `resource` and `context` without `evaluations`"
                .to_owned(),
        );
    }
    to_request(Parts::of(&object))
        .map(|(request, _)| request)
        .map_err(|e| e.to_string())
}

/// `writ replay`: reads the log a chunk at a time and re-decides it line
/// by line, prints the report, and returns the exit code.
fn run_replay(args: &ReplayArgs) -> Result<u8, String> {
    use crate::replay::{render_markdown, render_text, write_json, FailOn, Replayer};
    let new = compile(&PolicyArgs {
        policies: args.policies.clone(),
        data: args.data.clone(),
    })?;
    let old = if args.old.is_empty() {
        None
    } else {
        Some(compile(&PolicyArgs {
            policies: args.old.clone(),
            data: args.data.clone(),
        })?)
    };
    let replayer = Replayer::new(&new, old.as_ref());
    let report = if args.log == "-" {
        replayer
            .replay_from(std::io::stdin().lock())
            .map_err(|e| format!("cannot read the decision log from stdin: {e}"))?
    } else {
        let file = std::fs::File::open(&args.log)
            .map_err(|e| format!("cannot read `{}`: {e}", args.log))?;
        replayer
            .replay_from(file)
            .map_err(|e| format!("cannot read `{}`: {e}", args.log))?
    };
    match args.format {
        ReplayFormat::Text => print!("{}", render_text(&report)),
        ReplayFormat::Json => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            write_json(&report, &mut out)
                .and_then(|()| std::io::Write::write_all(&mut out, b"\n"))
                .and_then(|()| std::io::Write::flush(&mut out))
                .map_err(|e| format!("cannot write the report: {e}"))?;
        }
        ReplayFormat::Markdown => print!("{}", render_markdown(&report)),
    }
    let fail_on = match args.fail_on {
        ReplayFailOn::Widen => FailOn::Widen,
        ReplayFailOn::Change => FailOn::Change,
        ReplayFailOn::None => FailOn::None,
    };
    let code = report.exit_code(fail_on);
    if code == 2 {
        eprintln!(
            "error: `{}` holds no decision line that could be read ({} line(s), {} malformed)",
            args.log,
            report.lines,
            report.malformed.len()
        );
    }
    Ok(code)
}

/// `--threshold 90` or `--threshold 87.5%`: a percentage from 0 to 100.
fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(value) if (0.0..=100.0).contains(&value) => Ok(value),
        _ => Err(format!("`{text}` is not a percentage from 0 to 100")),
    }
}

/// `writ fmt`: 0 when nothing needed formatting (or it was rewritten), 1
/// when `--check` found files to change, 2 when a file does not parse.
fn run_fmt(paths: &[PathBuf], check: bool) -> Result<u8, String> {
    if paths.len() == 1 && paths[0] == Path::new("-") {
        let text = read_input("-")?;
        return match crate::fmt::format_source("<stdin>", &text) {
            Ok(formatted) if check => {
                if formatted == text {
                    Ok(0)
                } else {
                    print!("{}", crate::fmt::unified_diff("<stdin>", &text, &formatted));
                    Ok(1)
                }
            }
            Ok(formatted) => {
                print!("{formatted}");
                Ok(0)
            }
            Err(diagnostics) => {
                eprint!("{}", diagnostics.render(color_stderr()));
                Ok(2)
            }
        };
    }
    let files = crate::load::discover(paths, "writ")?;
    if files.is_empty() {
        return Err("no `.writ` files found".to_owned());
    }
    let (mut changed, mut broken) = (0usize, 0usize);
    for file in &files {
        let name = file.display().to_string();
        let text = read_input(&name)?;
        match crate::fmt::format_source(&name, &text) {
            Ok(formatted) if formatted == text => {}
            Ok(formatted) => {
                changed += 1;
                if check {
                    print!("{}", crate::fmt::unified_diff(&name, &text, &formatted));
                } else {
                    std::fs::write(file, formatted)
                        .map_err(|e| format!("cannot write `{name}`: {e}"))?;
                    eprintln!("formatted `{name}`");
                }
            }
            Err(diagnostics) => {
                broken += 1;
                eprint!("{}", diagnostics.render(color_stderr()));
            }
        }
    }
    if broken > 0 {
        eprintln!("{broken} file(s) could not be formatted");
        return Ok(2);
    }
    if check && changed > 0 {
        eprintln!("{changed} of {} file(s) would be reformatted", files.len());
        return Ok(1);
    }
    Ok(0)
}

/// Draws DOT as SVG with Graphviz's `dot` (`writ tree --svg`, the
/// playground).
pub(crate) fn dot_to_svg(dot: &str) -> Result<String, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "`--svg` needs Graphviz, and `dot` is not on the PATH; install Graphviz (https://graphviz.org/download/, e.g. `apt-get install graphviz` or `brew install graphviz`) or use `--dot`".to_owned(),
            _ => format!("cannot run Graphviz's `dot`: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(dot.as_bytes())
            .map_err(|e| format!("cannot write to Graphviz's `dot`: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("Graphviz's `dot` failed: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "Graphviz's `dot` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| "Graphviz's `dot` wrote invalid UTF-8".to_owned())
}
