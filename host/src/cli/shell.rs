//! `kvstash shell`: the CLI's commands at a prompt, on one open store.
//!
//! Each line is read by rustyline (history in the data directory, Emacs
//! keys), split as a POSIX shell splits words, and parsed as the command
//! line `kvstash --bucket CURRENT LINE` would be; the command then runs on
//! the store the shell opened. Tab completes command names, bucket names
//! (after `use`, `-b`, `--bucket`) and keys of the current bucket (the
//! argument after a command that takes a key). JSON values print indented.

use std::path::PathBuf;

use clap::{CommandFactory as _, Parser as _};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::{Cli, Output, execute};
use crate::api::{ListOptions, Store};

/// Commands whose first argument is a key of the current bucket.
const KEY_COMMANDS: [&str; 5] = ["get", "set", "delete", "incr", "path"];

/// Words the shell itself understands.
const BUILTINS: [&str; 4] = ["use", "help", "exit", "quit"];

/// The shell's completions: it asks the store, from the editor's thread.
struct Completions {
    store: Store,
    runtime: tokio::runtime::Handle,
    bucket: std::sync::Arc<std::sync::Mutex<String>>,
    commands: Vec<String>,
}

impl Completions {
    fn keys(&self, prefix: &str) -> Vec<String> {
        let bucket = self
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let options = ListOptions {
            prefix: Some(prefix.to_string()).filter(|p| !p.is_empty()),
            limit: Some(100),
            keys_only: true,
            ..ListOptions::default()
        };
        let listed = self
            .runtime
            .block_on(self.store.bucket(&bucket).list(&options));
        listed
            .map(|page| page.items.into_iter().map(|i| i.key).collect())
            .unwrap_or_default()
    }

    fn buckets(&self, prefix: &str) -> Vec<String> {
        self.runtime
            .block_on(self.store.buckets())
            .unwrap_or_default()
            .into_iter()
            .filter(|b| b.starts_with(prefix))
            .collect()
    }
}

impl Completer for Completions {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let earlier: Vec<&str> = before[..start].split_whitespace().collect();
        let candidates: Vec<String> = match earlier.as_slice() {
            [] => self
                .commands
                .iter()
                .filter(|c| c.starts_with(word))
                .cloned()
                .collect(),
            [.., "use" | "-b" | "--bucket"] => self.buckets(word),
            [command] if KEY_COMMANDS.contains(command) => self.keys(word),
            // `path get KEY …`
            ["path", _] => self.keys(word),
            _ => Vec::new(),
        };
        let pairs = candidates
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: shlex::try_quote(&c).map(|q| q.into_owned()).unwrap_or(c) + " ",
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Completions {
    type Hint = String;
}

impl Highlighter for Completions {}

impl Validator for Completions {}

impl Helper for Completions {}

/// What one line asks for.
enum Line {
    Nothing,
    Leave,
    Use(String),
    Help,
    Run(Box<Cli>),
    /// Not a command: what to print (clap's message, or the quoting).
    Refused(String),
}

fn parse(line: &str, bucket: &str) -> Line {
    let Some(words) = shlex::split(line) else {
        return Line::Refused("kvstash: error: unbalanced quotes".into());
    };
    match words.as_slice() {
        [] => Line::Nothing,
        [only] if only == "exit" || only == "quit" => Line::Leave,
        [only] if only == "help" => Line::Help,
        [use_, name] if use_ == "use" => Line::Use(name.clone()),
        [use_, ..] if use_ == "use" => Line::Refused("usage: use BUCKET".into()),
        _ => {
            if words.iter().any(|w| {
                w == "--config"
                    || w == "--data"
                    || w.starts_with("--config=")
                    || w.starts_with("--data=")
            }) {
                return Line::Refused(
                    "kvstash: error: the shell works on the store it opened; start another for another store".into(),
                );
            }
            let names_bucket = words.iter().any(|w| {
                w == "-b"
                    || w == "--bucket"
                    || w.starts_with("--bucket=")
                    || (w.starts_with("-b") && w.len() > 2 && !w.starts_with("--"))
            });
            let current = if names_bucket {
                vec![]
            } else {
                vec!["--bucket", bucket]
            };
            let argv = std::iter::once("kvstash")
                .chain(current)
                .map(String::from)
                .chain(words);
            match Cli::try_parse_from(argv) {
                Ok(cli) => Line::Run(Box::new(cli)),
                Err(e) => Line::Refused(e.render().to_string()),
            }
        }
    }
}

/// Runs the prompt until `exit` or end of input.
pub(super) async fn run(
    store: Store,
    bucket: String,
    history: PathBuf,
) -> anyhow::Result<std::process::ExitCode> {
    let mut commands: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|c| c != "shell")
        .chain(BUILTINS.iter().map(|b| b.to_string()))
        .collect();
    commands.sort();
    let current = std::sync::Arc::new(std::sync::Mutex::new(bucket));
    let helper = Completions {
        store: store.clone(),
        runtime: tokio::runtime::Handle::current(),
        bucket: current.clone(),
        commands,
    };
    // The editor blocks on the terminal; it runs on a thread of its own and
    // hands each line back here, where the command runs.
    let (lines, mut next_line) = tokio::sync::mpsc::channel::<Option<String>>(1);
    let (done, mut line_done) = tokio::sync::mpsc::channel::<()>(1);
    let prompt_bucket = current.clone();
    let editor = std::thread::Builder::new()
        .name("kvstash-shell".into())
        .spawn(move || -> anyhow::Result<()> {
            let mut editor =
                rustyline::Editor::<Completions, rustyline::history::DefaultHistory>::new()?;
            editor.set_helper(Some(helper));
            let _ = editor.load_history(&history);
            loop {
                let prompt = format!(
                    "kvstash:{}> ",
                    prompt_bucket.lock().unwrap_or_else(|p| p.into_inner())
                );
                let line = match editor.readline(&prompt) {
                    Ok(line) => line,
                    // Ctrl-C drops the line being typed, as in a shell.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => break,
                    Err(e) => return Err(e.into()),
                };
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if lines.blocking_send(Some(line)).is_err() || line_done.blocking_recv().is_none() {
                    break;
                }
            }
            let _ = lines.blocking_send(None);
            if let Some(dir) = history.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = editor.save_history(&history);
            Ok(())
        })?;
    while let Some(Some(line)) = next_line.recv().await {
        let bucket = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match parse(&line, &bucket) {
            Line::Nothing => {}
            Line::Leave => break,
            Line::Help => {
                println!(
                    "The commands of `kvstash --help`, on this store and bucket. Shell words: use BUCKET, help, exit.\nTab completes commands, buckets and keys; `COMMAND --help` explains one."
                );
            }
            Line::Use(name) => *current.lock().unwrap_or_else(|p| p.into_inner()) = name,
            Line::Refused(message) => eprintln!("{}", message.trim_end()),
            Line::Run(cli) => {
                let cli = *cli;
                if let Err(e) = execute(cli.command, &store, &bucket, Output::Pretty).await {
                    eprintln!("kvstash: error: {e:#}");
                }
            }
        }
        if done.send(()).await.is_err() {
            break;
        }
    }
    drop(done);
    drop(next_line);
    editor
        .join()
        .map_err(|_| anyhow::anyhow!("the line editor failed"))??;
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_words_of_a_command_in_the_current_bucket() {
        let Line::Run(cli) = parse("set name 'backyard shed sensor' --string", "names") else {
            panic!("a command");
        };
        assert_eq!(cli.bucket, "names");
        assert!(matches!(parse("  ", "b"), Line::Nothing));
        assert!(matches!(parse("exit", "b"), Line::Leave));
        assert!(matches!(parse("use devices", "b"), Line::Use(name) if name == "devices"));
        assert!(matches!(parse("get 'unbalanced", "b"), Line::Refused(_)));
        assert!(matches!(parse("frobnicate", "b"), Line::Refused(_)));
        assert!(matches!(
            parse("--data /elsewhere get k", "b"),
            Line::Refused(_)
        ));
        let Line::Run(cli) = parse("-b other get k", "names") else {
            panic!("a command");
        };
        assert_eq!(cli.bucket, "other", "a line may name its own bucket");
    }
}
