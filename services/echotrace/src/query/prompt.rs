//! The interactive prompt of `echotrace query`: statements end with `;`, history is kept in
//! `~/.echotrace_history`, `\q` or Ctrl-D leaves. An error is printed and the prompt goes on. Each
//! statement reads the files present when it runs, so a long session sees what a running consumer
//! flushed since it started.

use super::output::{Format, write};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use std::path::{Path, PathBuf};

/// Reads statements until `\q` or end of input, running each and printing its result as a table.
pub async fn interactive(data: &Path) -> anyhow::Result<()> {
    super::session(data).await?;
    let mut editor = DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".echotrace_history"));
    if let Some(history) = &history {
        let _ = editor.load_history(history);
    }
    println!(
        "echotrace query over {}: tables {}; end statements with ';', \\q to quit",
        data.display(),
        super::TABLES.join(", ")
    );
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() { "echotrace> " } else { "       ..> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error.into()),
        };
        if statement.is_empty() && line.trim() == "\\q" {
            break;
        }
        statement.push_str(&line);
        statement.push('\n');
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let _ = editor.add_history_entry(statement.trim());
        let result = match super::session(data).await {
            Ok(session) => super::run(&session, &statement).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(batches) => write(&batches, Format::Table, &mut std::io::stdout().lock(), None)?,
            Err(error) => eprintln!("error: {error}"),
        }
        statement.clear();
    }
    if let Some(history) = &history {
        let _ = editor.save_history(history);
    }
    Ok(())
}
