//! The documentation's links hold in a fresh clone: every relative link (`[text](path)`,
//! `[text](path#anchor)`, `[label]: path`) in the repository's Markdown files names a file or
//! folder inside the repository, and every `#anchor` a heading of the page it points at, with
//! GitHub's rules for heading anchors. Links to the web (`http(s)://`, `mailto:`) are not
//! followed: a test must not depend on the network.
//!
//! This file must not check wording or style: only that what a reader clicks exists.

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

/// Every `*.md` file below `root`, skipping build output, runtime data and hidden folders.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !(name.starts_with('.') || name == "target" || name == "var") {
                    folders.push(path);
                }
            } else if name.ends_with(".md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The lines of a page outside its fenced code blocks (```` ``` ```` or `~~~`), so that
/// examples in code are never taken for links or headings.
fn outside_fences(markdown: &str) -> Vec<&str> {
    let mut prose = Vec::new();
    let mut fence: Option<&str> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        match fence {
            Some(marker) => {
                if trimmed.starts_with(marker) {
                    fence = None;
                }
            }
            None if trimmed.starts_with("```") => fence = Some("```"),
            None if trimmed.starts_with("~~~") => fence = Some("~~~"),
            None => prose.push(line),
        }
    }
    prose
}

/// `line` with every inline code span (a run of backticks up to the same run) taken out.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(open) = rest.find('`') {
        out.push_str(&rest[..open]);
        let ticks = rest[open..].len() - rest[open..].trim_start_matches('`').len();
        let after = &rest[open + ticks..];
        match after.find(&"`".repeat(ticks)) {
            Some(close) => rest = &after[close + ticks..],
            // An unclosed run is literal text.
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The targets of a page's links: inline `](target)` and reference definitions `[label]: target`.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in outside_fences(markdown) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after
                .find(|c: char| c == ')' || c.is_whitespace())
                .unwrap_or(after.len());
            targets.push(after[..end].trim_matches(['<', '>']).to_owned());
            rest = &after[end..];
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some((_, definition)) = trimmed.split_once("]:")
            && let Some(target) = definition.split_whitespace().next()
        {
            targets.push(target.trim_matches(['<', '>']).to_owned());
        }
    }
    targets
}

/// The anchors GitHub gives a page's headings: the heading's text in lower case, letters,
/// digits, `-` and `_` kept, spaces turned into `-`, everything else dropped; a repeated
/// anchor gets `-1`, `-2`, ….
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for line in outside_fences(markdown) {
        // Code spans count by their text.
        let line = line.replace('`', "");
        let hashes = line.len() - line.trim_start_matches('#').len();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let text = line[hashes..].trim().trim_end_matches('#').trim();
        let slug: String = text
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(match *count {
            0 => slug.clone(),
            n => format!("{slug}-{n}"),
        });
        *count += 1;
    }
    anchors
}

/// `path` with `.` and `..` resolved without touching the disk.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Every link of `files` that does not resolve, as "page: target (why)".
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let root = normalize(root);
    let mut broken = Vec::new();
    for file in files {
        let page = std::fs::read_to_string(file).unwrap();
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for target in link_targets(&page) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else if path.starts_with('/') {
                broken.push(format!(
                    "{shown}: {target} (an absolute path; write it relative to the page)"
                ));
                continue;
            } else {
                normalize(&file.parent().unwrap().join(path))
            };
            if !resolved.starts_with(&root) {
                broken.push(format!(
                    "{shown}: {target} (outside the repository: a clone does not have it)"
                ));
                continue;
            }
            if !resolved.exists() {
                broken.push(format!("{shown}: {target} (no such file)"));
                continue;
            }
            if let Some(anchor) = anchor
                && resolved.extension().is_some_and(|e| e == "md")
            {
                let headings = anchors(&std::fs::read_to_string(&resolved).unwrap());
                if !headings.contains(anchor) {
                    broken.push(format!(
                        "{shown}: {target} (no heading with that anchor; the page has: {})",
                        headings.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_of_the_docs_resolves_in_a_clone() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = markdown_files(root);
    // The pages the README promises are among those checked (and exist).
    for page in [
        "README.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
        "bench/README.md",
        "docs/architecture.md",
        "docs/commands.md",
        "docs/configuration.md",
        "docs/emulator.md",
        "docs/operating.md",
        "docs/replay.md",
        "docs/security.md",
        "docs/testing.md",
    ] {
        assert!(
            files.contains(&root.join(page)),
            "{page} is missing, or was not found by the walk: {files:?}"
        );
    }
    let broken = broken_links(root, &files);
    assert!(
        broken.is_empty(),
        "{} broken link(s):\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn the_check_reports_a_missing_file_a_missing_heading_and_a_way_out() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path().join("repo");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(
        root.join("README.md"),
        "# Project\n\n## Two commands: `run` and `test`\n\n\
         [fine](docs/guide.md), [fine too](docs/guide.md#the-guide) and [here](#two-commands-run-and-test).\n\
         [gone](docs/gone.md) and [no heading](docs/guide.md#nowhere).\n\
         [away](../outside.md) and [web](https://example.com/gone.md).\n\
         In code: `[not a link](code.md)`.\n\n\
         ```sh\necho '[not a link](fenced.md)'\n```\n\n\
         [label]: docs/missing-too.md\n",
    )
    .unwrap();
    std::fs::write(
        root.join("docs/guide.md"),
        "# The guide\n\n[back](../README.md#project)\n",
    )
    .unwrap();
    std::fs::write(repo.path().join("outside.md"), "# Outside\n").unwrap();

    let files = markdown_files(&root);
    assert_eq!(
        files,
        vec![root.join("README.md"), root.join("docs/guide.md")]
    );
    let broken = broken_links(&root, &files);
    assert_eq!(broken.len(), 4, "{broken:#?}");
    assert!(broken[0].starts_with("README.md: docs/gone.md (no such file)"));
    assert!(broken[1].starts_with("README.md: docs/guide.md#nowhere (no heading"));
    assert!(broken[1].contains("the-guide"));
    assert!(broken[2].starts_with("README.md: ../outside.md (outside the repository"));
    assert!(broken[3].starts_with("README.md: docs/missing-too.md (no such file)"));
}
