//! The `writ` command line: a thin shell over the library.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use writ::engine::DEFAULT_PACK;
use writ::explain::{explain, Style};
use writ::fixture;
use writ::{Engine, Request};

/// writ decides whether a non-human identity may be issued a short-lived
/// credential, with which scope, for how long and under which obligations.
#[derive(Debug, Parser)]
#[command(name = "writ", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Decide one request. Exits 0 on allow, 1 on deny, 2 on error.
    Eval {
        #[command(flatten)]
        policy: PolicyArgs,
        /// The request JSON file, or `-` for stdin.
        #[arg(long, short = 'r', value_name = "FILE|-")]
        request: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        /// Explain the decision step by step (text).
        #[arg(long)]
        explain: bool,
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
    },
    /// Run fixture files and report `N passed, M failed`.
    Test {
        /// Fixture files or directories (default: `tests/`).
        paths: Vec<PathBuf>,
        /// Report how many cases matched each rule.
        #[arg(long)]
        coverage: bool,
    },
    /// Work with the embedded default pack.
    Pack {
        #[command(subcommand)]
        command: PackCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PackCommand {
    /// Print the pack's files.
    Show,
    /// List the pack's files.
    List,
}

fn main() -> ExitCode {
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

fn read_data(path: Option<&Path>) -> Result<Option<Value>, String> {
    let Some(path) = path else { return Ok(None) };
    let text = read_input(path.to_string_lossy().as_ref())?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("data file `{}` is not valid JSON: {e}", path.display()))
}

/// Reads a file, or stdin for `-`, refusing inputs over the size limit.
fn read_input(path: &str) -> Result<String, String> {
    const LIMIT: u64 = 16 * 1024 * 1024;
    let mut text = String::new();
    let result = if path == "-" {
        std::io::stdin().take(LIMIT + 1).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(LIMIT + 1).read_to_string(&mut text))
    };
    result.map_err(|e| format!("cannot read `{path}`: {e}"))?;
    if text.len() as u64 > LIMIT {
        return Err(format!("`{path}` is larger than {LIMIT} bytes"));
    }
    Ok(text)
}

fn compile(policy: &PolicyArgs) -> Result<Engine, String> {
    let files = fixture::load_policies(&policy.policies, Path::new("."))?;
    let data = read_data(policy.data.as_deref())?;
    Engine::compile(files, data.as_ref()).map_err(|d| {
        format!(
            "the policies do not compile ({} diagnostics):\n{}",
            d.len(),
            d.render(color_stderr())
        )
    })
}

fn run(cli: Cli) -> Result<u8, String> {
    match cli.command {
        Command::Eval {
            policy,
            request,
            format,
            explain: want_explain,
        } => {
            let engine = compile(&policy)?;
            let text = read_input(&request)?;
            let request = Request::from_json(&text).map_err(|e| e.to_string())?;
            let decision = engine.decide(&request);
            if want_explain {
                print!("{}", explain(&decision, &engine, Style::new(color_stdout())));
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
        Command::Check { paths, data, format } => {
            let files = fixture::load_policies(&paths, Path::new("."))?;
            let data = read_data(data.as_deref())?;
            let count = files.len();
            match Engine::compile(files, data.as_ref()) {
                Ok(engine) => {
                    if format == Format::Json {
                        println!("[]");
                    } else {
                        eprintln!(
                            "ok: {count} file(s), {} rule(s), no diagnostics",
                            engine.policy().rules.len()
                        );
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
        Command::Tree { policy, dot } => {
            let engine = compile(&policy)?;
            if dot {
                print!("{}", engine.tree().to_dot(engine.policy()));
            } else {
                print!("{}", engine.tree().render(engine.policy()));
            }
            Ok(0)
        }
        Command::Test { paths, coverage } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from("tests")]
            } else {
                paths
            };
            let files = fixture::discover(&paths);
            if files.is_empty() {
                return Err("no fixture files (`*.json`) found".to_owned());
            }
            let report = fixture::run(&files);
            print!("{}", fixture::render(&report, coverage));
            Ok(if report.failed() == 0 { 0 } else { 1 })
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
