//! Every `cargo xtask …` command that README.md and the docs show is one the
//! CLI takes: its subcommand and flags exist and its values parse. Each is
//! run with `--help` appended, which clap reaches only after parsing every
//! argument before it, and which then prints the help instead of running.

mod common;

use std::path::Path;

use common::{text, xtask};

/// Code spans and code-block lines of a Markdown file that hold a command.
fn commands(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_block = false;
    let mut prose = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            found.push(line.split(" #").next().unwrap_or_default().to_string());
        } else {
            prose.push_str(line);
            prose.push(' ');
        }
    }
    // Inline code spans, which may run over a line break.
    found.extend(prose.split('`').skip(1).step_by(2).map(str::to_string));
    found
        .into_iter()
        .filter_map(|command| xtask_arguments(&command))
        .collect()
}

/// The arguments after `cargo xtask` (or after `--` of `cargo run -p xtask`),
/// optional parts (`[--flag]`) taken as given.
fn xtask_arguments(command: &str) -> Option<String> {
    let rest = match command.split_once("cargo xtask ") {
        Some((_, rest)) => rest,
        None if command.contains("-p xtask") => command.split_once(" -- ")?.1,
        None => return None,
    };
    let arguments = rest.replace(['[', ']'], "").trim().to_string();
    // `cargo xtask …` stands for every command, not one.
    (!arguments.starts_with('…')).then_some(arguments)
}

#[test]
fn every_documented_command_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut documents = vec![root.join("README.md"), root.join("datasets/README.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        documents.push(entry.expect("an entry of docs/").path());
    }
    let mut checked = 0;
    let mut refused = Vec::new();
    for document in documents
        .iter()
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
    {
        let markdown = std::fs::read_to_string(document).expect("a document");
        for command in commands(&markdown) {
            let mut arguments: Vec<&str> = command.split_whitespace().collect();
            arguments.push("--help");
            let output = xtask(&arguments);
            checked += 1;
            if !output.status.success() {
                refused.push(format!(
                    "{}: cargo xtask {command}\n{}",
                    document.strip_prefix(&root).unwrap_or(document).display(),
                    text(&output)
                ));
            }
        }
    }
    assert!(checked >= 20, "only {checked} commands found: is the scan broken?");
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

#[test]
fn commands_are_found_in_blocks_and_spans() {
    let markdown =
        "Run `cargo xtask cv --folds\n5` or `cargo xtask …` or:\n```sh\ncargo xtask train --epochs 2   # short\n\
                    . env.sh && cargo run --release -p xtask --features cuda -- train --device cuda\n```\n\
                    then `cargo xtask bench --detection [--compare-torch]`; `cargo test` is not one.";
    assert_eq!(
        commands(markdown),
        [
            "train --epochs 2",
            "train --device cuda",
            "cv --folds 5",
            "bench --detection --compare-torch"
        ]
    );
}
