//! The documentation's links resolve. Every Markdown page at the repository
//! root, in `docs/` and in `fuzz/` is parsed as CommonMark (with GitHub's
//! tables); each relative link must name a file or directory that exists, and
//! each `#anchor`, on the same page or another Markdown page, must be the
//! anchor GitHub gives one of that page's headings. Links with a scheme
//! (`https:`, `mailto:`) are not fetched. Pure: no engine, no network.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{BrokenLink, Event, LinkType, Options, Parser, Tag, TagEnd};
use rstest::rstest;

/// The directories, relative to the repository root, whose `*.md` files are
/// checked.
const CHECKED_DIRS: &[&str] = &["", "docs", "fuzz"];

/// The anchor GitHub gives a heading: its text lowercased, every character
/// that is not a letter, a digit, `-`, `_` or a space dropped, and each space
/// turned into `-` (runs are not collapsed).
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// A link as written on a page, with the line it is on.
#[derive(Debug)]
struct Link {
    line: usize,
    dest: String,
}

/// What the checker needs from one page.
#[derive(Debug, Default)]
struct Page {
    /// Heading anchors; a repeated heading gets `-1`, `-2` ... as on GitHub.
    anchors: HashSet<String>,
    links: Vec<Link>,
    /// `[text][ref]` and `[text][]` whose reference is not defined.
    broken_refs: Vec<Link>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

fn parse(text: &str) -> Page {
    let mut broken = Vec::new();
    let callback = |link: BrokenLink<'_>| {
        if matches!(link.link_type, LinkType::Reference | LinkType::Collapsed) {
            broken.push((link.span.start, link.reference.to_string()));
        }
        None
    };
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut page = Page::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut heading: Option<String> = None;
    for (event, range) in
        Parser::new_with_broken_link_callback(text, options, Some(callback)).into_offset_iter()
    {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::End(TagEnd::Heading(_)) => {
                let base = slug(&heading.take().unwrap_or_default());
                let count = seen.entry(base.clone()).or_insert(0);
                let anchor = match *count {
                    0 => base,
                    n => format!("{base}-{n}"),
                };
                *count += 1;
                page.anchors.insert(anchor);
            }
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                page.links.push(Link {
                    line: line_of(text, range.start),
                    dest: dest_url.to_string(),
                });
            }
            _ => {}
        }
    }
    page.broken_refs = broken
        .into_iter()
        .map(|(offset, reference)| Link {
            line: line_of(text, offset),
            dest: reference,
        })
        .collect();
    page
}

/// `true` for `https://...`, `mailto:...` and the like.
fn has_scheme(dest: &str) -> bool {
    match dest.split_once(':') {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// `base/rel` with `.` and `..` folded, without touching the file system;
/// `None` when it climbs out of the repository.
fn join(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in base.join(rel).components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// Parses `path` (relative to `root`) once; `false` if it cannot be read.
fn load(root: &Path, parsed: &mut BTreeMap<PathBuf, Option<Page>>, path: &Path) -> bool {
    parsed
        .entry(path.to_path_buf())
        .or_insert_with(|| fs::read_to_string(root.join(path)).ok().map(|t| parse(&t)))
        .is_some()
}

/// Every broken link of the pages `pages` (relative to `root`), one line each:
/// `page:line: ...`.
fn check(root: &Path, pages: &[PathBuf]) -> Vec<String> {
    let mut parsed: BTreeMap<PathBuf, Option<Page>> = BTreeMap::new();
    for page in pages {
        load(root, &mut parsed, page);
    }
    let mut problems = Vec::new();
    for page in pages {
        let Some(Some(p)) = parsed.get(page) else {
            problems.push(format!("{}: cannot be read", page.display()));
            continue;
        };
        let dir = page.parent().unwrap_or(Path::new(""));
        let mut wanted: Vec<(usize, String, PathBuf, Option<String>)> = Vec::new();
        for link in &p.broken_refs {
            problems.push(format!(
                "{}:{}: reference [{}] is not defined on the page",
                page.display(),
                link.line,
                link.dest
            ));
        }
        for link in &p.links {
            if has_scheme(&link.dest) {
                continue;
            }
            let (path, anchor) = match link.dest.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor.to_string())),
                None => (link.dest.as_str(), None),
            };
            let target = if path.is_empty() {
                Some(page.clone())
            } else if let Some(from_root) = path.strip_prefix('/') {
                join(Path::new(""), from_root)
            } else {
                join(dir, path)
            };
            let Some(target) = target else {
                problems.push(format!(
                    "{}:{}: link `{}` points outside the repository",
                    page.display(),
                    link.line,
                    link.dest
                ));
                continue;
            };
            if !root.join(&target).exists() {
                problems.push(format!(
                    "{}:{}: link `{}`: {} does not exist",
                    page.display(),
                    link.line,
                    link.dest,
                    target.display()
                ));
                continue;
            }
            wanted.push((link.line, link.dest.clone(), target, anchor));
        }
        for (line, dest, target, anchor) in wanted {
            let Some(anchor) = anchor else { continue };
            if target.extension().is_none_or(|e| e != "md") {
                continue; // anchors into source files (`#L10`) are GitHub's line links
            }
            if !load(root, &mut parsed, &target) {
                problems.push(format!(
                    "{}:{line}: link `{dest}`: {} cannot be read",
                    page.display(),
                    target.display()
                ));
                continue;
            }
            let anchors = match parsed.get(&target) {
                Some(Some(t)) => &t.anchors,
                _ => continue,
            };
            if !anchors.contains(&anchor) {
                let mut known: Vec<&str> = anchors.iter().map(String::as_str).collect();
                known.sort_unstable();
                problems.push(format!(
                    "{}:{line}: link `{dest}`: {} has no heading with anchor `{anchor}` (it has: {})",
                    page.display(),
                    target.display(),
                    known.join(", ")
                ));
            }
        }
    }
    problems
}

/// The `*.md` files directly in each of `dirs` under `root`, relative to it.
fn pages(root: &Path, dirs: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = PathBuf::from(dir).join(entry.file_name());
            if name.extension().is_some_and(|e| e == "md") && root.join(&name).is_file() {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

#[test]
fn every_link_in_the_documentation_resolves() {
    let root = repo_root();
    let pages = pages(&root, CHECKED_DIRS);
    for expected in ["README.md", "docs/configuration.md"] {
        assert!(
            pages.contains(&PathBuf::from(expected)),
            "{expected} is among the checked pages: {pages:?}"
        );
    }
    let problems = check(&root, &pages);
    assert!(
        problems.is_empty(),
        "broken links in the documentation:\n{}",
        problems.join("\n")
    );
}

#[rstest]
#[case::plain("Running as a container", "running-as-a-container")]
#[case::code_and_parens("The agent (`pullauth serve`)", "the-agent-pullauth-serve")]
#[case::apostrophe_and_comma(
    "Docker on the host, with the agent's credentials",
    "docker-on-the-host-with-the-agents-credentials"
)]
#[case::underscores("ECS_ENGINE_AUTH_DATA", "ecs_engine_auth_data")]
#[case::colon_and_dots("2026-12-01: the binary, v0.1.0", "2026-12-01-the-binary-v010")]
#[case::symbol_between_spaces("6.1 MB → 20.6 MB", "61-mb--206-mb")]
fn slug_is_githubs_anchor(#[case] heading: &str, #[case] anchor: &str) {
    assert_eq!(slug(heading), anchor);
}

#[test]
fn headings_become_anchors_with_github_suffixes_for_repeats() {
    let page = parse("# Title\n\n## Notes\n\ntext\n\n## Notes\n\n## The `serve` command\n");
    let mut anchors: Vec<_> = page.anchors.iter().map(String::as_str).collect();
    anchors.sort_unstable();
    assert_eq!(anchors, ["notes", "notes-1", "the-serve-command", "title"]);
}

#[test]
fn links_in_code_are_not_links() {
    let page = parse("`[a](missing.md)`\n\n```\n[b](missing.md)\n```\n\n[c](there.md)\n");
    let dests: Vec<_> = page.links.iter().map(|l| l.dest.as_str()).collect();
    assert_eq!(dests, ["there.md"]);
}

/// The checker itself: a small tree with one good link of each kind and one
/// bad link of each kind; exactly the bad ones are reported, with their line.
#[test]
fn checker_reports_each_kind_of_broken_link_and_nothing_else() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path();
    fs::create_dir(root.join("docs")).expect("docs/ created");
    fs::write(
        root.join("README.md"),
        "# Top\n\n## Good part\n\n\
         [same page](#good-part) [other page](docs/page.md#a-section) [file](docs/page.md)\n\
         [dir](docs) [web](https://example.com/missing.md#nope) [mail](mailto:a@example.com)\n\
         [reference][r]\n\n[r]: docs/page.md#a-section\n\n\
         [bad file](docs/gone.md)\n\
         [bad same-page anchor](#bad-part)\n\
         [bad other-page anchor](docs/page.md#no-such-section)\n\
         [undefined reference][nowhere]\n",
    )
    .expect("README written");
    fs::write(
        root.join("docs/page.md"),
        "# Page\n\n## A section\n\n[back](../README.md#top) [up and out](../../outside.md)\n",
    )
    .expect("page written");

    let pages = pages(root, &["", "docs"]);
    assert_eq!(
        pages,
        [PathBuf::from("README.md"), PathBuf::from("docs/page.md")]
    );
    let problems = check(root, &pages);
    let expected = [
        "README.md:14: reference [nowhere] is not defined on the page",
        "README.md:11: link `docs/gone.md`: docs/gone.md does not exist",
        "README.md:12: link `#bad-part`: README.md has no heading with anchor `bad-part` (it has: good-part, top)",
        "README.md:13: link `docs/page.md#no-such-section`: docs/page.md has no heading with anchor `no-such-section` (it has: a-section, page)",
        "docs/page.md:5: link `../../outside.md` points outside the repository",
    ];
    assert_eq!(problems, expected, "got:\n{}", problems.join("\n"));
}

/// The crate names in the README's crate map (the code block of
/// "Development" that starts with `crates/`): each indented `name/` line.
fn crate_map(readme: &str) -> Vec<String> {
    let start = readme
        .find("\n```\ncrates/\n")
        .expect("the README has a crate map starting with crates/");
    let block = &readme[start + 5..];
    let block = &block[..block.find("```").expect("the crate map's block ends")];
    block
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .filter_map(|line| line.split_whitespace().next()?.strip_suffix('/'))
        .map(str::to_owned)
        .collect()
}

/// The workspace's crates: every directory under `crates/` with a
/// Cargo.toml (read from disk, so a crate added later counts too).
fn workspace_crates(root: &Path) -> Vec<String> {
    let mut crates: Vec<String> = fs::read_dir(root.join("crates"))
        .expect("crates/ is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .map(|path| {
            path.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    crates.sort_unstable();
    crates
}

// Regression (issue 25): the README's crate map lacked pullauth-poll. Every
// crate under crates/ is in the map, and the map names no crate that is gone.
#[test]
fn readme_crate_map_lists_every_workspace_crate() {
    let root = repo_root();
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
    let mut mapped = crate_map(&readme);
    mapped.sort_unstable();
    let crates = workspace_crates(&root);
    assert!(crates.len() >= 8, "{crates:?}");
    let missing: Vec<&String> = crates.iter().filter(|c| !mapped.contains(c)).collect();
    assert!(
        missing.is_empty(),
        "crates missing from the README's crate map: {missing:?}"
    );
    let gone: Vec<&String> = mapped.iter().filter(|m| !crates.contains(m)).collect();
    assert!(
        gone.is_empty(),
        "the README's crate map names crates that do not exist: {gone:?}"
    );
}

#[test]
fn crate_map_reads_indented_names_only() {
    let readme = "x\n```\ncrates/\n  a-crate/   one\n                 more words/\n  b/  two\nintegration/  no\n```\n";
    assert_eq!(crate_map(readme), ["a-crate", "b"]);
}

// The README's first screen (everything before its first `##` heading) names
// every command that does a job of its own, prefetch among them.
#[test]
fn readme_first_screen_names_each_main_command() {
    let readme = fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let first = &readme[..readme.find("\n## ").expect("the README has sections")];
    for command in ["check", "resolve", "pull", "prefetch", "serve"] {
        assert!(
            first.contains(&format!("`pullauth {command}`")),
            "the README's first screen does not name `pullauth {command}`"
        );
    }
}
