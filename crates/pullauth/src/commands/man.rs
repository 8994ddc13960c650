//! `pullauth man`: one roff page for pullauth and every subcommand, from
//! the clap definitions.

use std::process::ExitCode;

use clap::CommandFactory;
use clap_mangen::Man;

use crate::cli::Cli;

pub fn run() -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    command.build();
    let mut page = Vec::new();
    // Man::render would list the subcommands as pages of their own
    // (pullauth-check(1)); here they are sections of this page instead.
    let man = Man::new(command.clone());
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    subcommand_sections(&command, "pullauth", &mut page)?;
    man.render_version_section(&mut page)?;
    super::say_bytes(&page)?;
    Ok(ExitCode::SUCCESS)
}

/// For each subcommand (depth first), a section with its description,
/// synopsis and options, so that one page documents the whole tool.
fn subcommand_sections(
    parent: &clap::Command,
    path: &str,
    page: &mut Vec<u8>,
) -> std::io::Result<()> {
    for sub in parent.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("{path} {}", sub.get_name());
        page.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        let man = Man::new(sub.clone());
        let mut section = Vec::new();
        man.render_description_section(&mut section)?;
        man.render_synopsis_section(&mut section)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut section)?;
        }
        // The parts come as sections of a page of their own; here they are
        // subsections of this subcommand's section.
        for line in String::from_utf8_lossy(&section).lines() {
            let line = line
                .strip_prefix(".SH ")
                .map_or_else(|| line.to_owned(), |heading| format!(".SS {heading}"));
            page.extend_from_slice(line.as_bytes());
            page.push(b'\n');
        }
        subcommand_sections(sub, &name, page)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_a_section_for_every_subcommand() {
        let mut command = Cli::command();
        command.build();
        let mut page = Vec::new();
        subcommand_sections(&command, "pullauth", &mut page).expect("renders");
        let page = String::from_utf8(page).expect("UTF-8");
        fn check(command: &clap::Command, path: &str, page: &str) {
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                let name = format!("{path} {}", sub.get_name());
                let heading = format!(".SH \"{}\"", name.to_uppercase());
                assert!(page.contains(&heading), "{heading} missing");
                check(sub, &name, page);
            }
        }
        check(&command, "pullauth", &page);
        assert!(page.contains(".SS OPTIONS"));
    }
}
