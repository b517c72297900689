//! `writ diff` and `writ query`: questions over all requests, answered
//! from the policies (docs/review.md).

use std::path::PathBuf;

use clap::ValueEnum;

use super::{compile, PolicyArgs};
use crate::replay::FailOn;
use crate::review::Budget;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(super) enum ReviewFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(super) enum DiffFailOn {
    /// When some class of requests is allowed more than before.
    Widen,
    /// When anything decides differently.
    Change,
    /// Never.
    None,
}

/// How far the search goes.
#[derive(Debug, clap::Args)]
pub(super) struct BudgetArgs {
    /// Stop after visiting this many partial requests (the answer then
    /// says it is bounded).
    #[arg(long, default_value_t = 200_000, value_name = "N")]
    max_nodes: usize,
    /// Requests sampled around each class whose rules test values outside
    /// the enumerable part.
    #[arg(long, default_value_t = 4, value_name = "N")]
    samples_per_class: usize,
    /// Sampled requests in all, at most.
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    max_samples: usize,
    /// The seed of the sampling (the same seed, the same answer).
    #[arg(long, default_value_t = 21)]
    seed: u64,
}

impl BudgetArgs {
    fn budget(&self) -> Budget {
        Budget {
            nodes: self.max_nodes,
            samples_per_class: self.samples_per_class,
            samples: self.max_samples,
            seed: self.seed,
        }
    }
}

#[derive(Debug, clap::Args)]
pub(super) struct DiffArgs {
    /// The old policy set: a file or directory (`default` is the embedded
    /// pack).
    #[arg(value_name = "OLD")]
    old: String,
    /// The new policy set.
    #[arg(value_name = "NEW")]
    new: String,
    /// JSON data file for both sets.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["data_old", "data_new"])]
    data: Option<PathBuf>,
    /// JSON data file for the old set.
    #[arg(long, value_name = "FILE")]
    data_old: Option<PathBuf>,
    /// JSON data file for the new set.
    #[arg(long, value_name = "FILE")]
    data_new: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    format: ReviewFormat,
    /// When to exit 1.
    #[arg(long, value_enum, default_value = "widen")]
    fail_on: DiffFailOn,
    #[command(flatten)]
    budget: BudgetArgs,
}

/// `writ diff OLD NEW`.
pub(super) fn run_diff(args: &DiffArgs) -> Result<u8, String> {
    use crate::review::diff::{diff, render_json, render_markdown, render_text};
    let side = |path: &str, data: &Option<PathBuf>, name: &str| {
        compile(&PolicyArgs {
            policies: vec![path.to_owned()],
            data: data.clone().or_else(|| args.data.clone()),
        })
        .map_err(|e| format!("{name} `{path}`: {e}"))
    };
    let old = side(&args.old, &args.data_old, "OLD")?;
    let new = side(&args.new, &args.data_new, "NEW")?;
    let report = diff(&old, &new, args.budget.budget());
    match args.format {
        ReviewFormat::Text => print!("{}", render_text(&report)),
        ReviewFormat::Json => println!("{}", render_json(&report)),
        ReviewFormat::Markdown => print!("{}", render_markdown(&report)),
    }
    let fail_on = match args.fail_on {
        DiffFailOn::Widen => FailOn::Widen,
        DiffFailOn::Change => FailOn::Change,
        DiffFailOn::None => FailOn::None,
    };
    Ok(report.exit_code(fail_on))
}

#[derive(Debug, clap::Args)]
pub(super) struct QueryArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// The question: an expression over the request, with `effect`,
    /// `allow`, `deny`, `allowed`, `denied`, `scope`, `scope matches
    /// "glob"`, `ttl` and `obligation KIND` about the decision.
    #[arg(value_name = "QUERY")]
    query: String,
    /// Answer format (`markdown`: the question and the text answer, for a
    /// pull-request comment).
    #[arg(long, value_enum, default_value = "text")]
    format: ReviewFormat,
    #[command(flatten)]
    budget: BudgetArgs,
}

/// `writ query`: exits 0 with a witness, 1 with none, 2 on bad input.
pub(super) fn run_query(args: &QueryArgs) -> Result<u8, String> {
    use crate::review::query::{query, render_json, Query};
    let engine = compile(&args.policy)?;
    let question = Query::new(&args.query).map_err(|e| e.to_string())?;
    let report = query(&engine, &question, args.budget.budget());
    if args.format == ReviewFormat::Json {
        println!("{}", render_json(&report));
        return Ok(u8::from(report.found.is_none()));
    }
    let mut text = String::new();
    match &report.found {
        Some(found) => {
            text.push_str(&format!(
                "found{}: {}\n",
                if found.sampled { " (sampled)" } else { "" },
                found.request
            ));
            text.push_str(&crate::explain::explain(
                &found.decision,
                &engine,
                crate::explain::Style::new(false),
            ));
            text.push('\n');
        }
        None if report.coverage.complete() => text.push_str("none\n"),
        None => text.push_str("none found where it looked\n"),
    }
    text.push_str(&format!("coverage: {}\n", report.coverage.sentence()));
    if args.format == ReviewFormat::Markdown {
        // For a pull-request comment: the question, then the answer as
        // the text format prints it.
        print!(
            "### `writ query`\n\n`{}`\n\n```text\n{text}```\n",
            args.query.replace('`', "'")
        );
    } else {
        print!("{text}");
    }
    Ok(u8::from(report.found.is_none()))
}
