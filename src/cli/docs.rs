//! `imgforge completions SHELL` and `imgforge manpages DIR`: shell completions and man pages
//! generated from the command-line definition, so they never drift from it (scripts/package
//! ships both).

use std::path::PathBuf;

use anyhow::Context as _;

/// `imgforge completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `imgforge manpages`.
#[derive(Debug, clap::Args)]
pub struct ManpagesArgs {
    /// Where to write imgforge.1 and imgforge-SUBCOMMAND.1 (created if missing).
    pub dir: PathBuf,
}

/// Prints the completion script.
pub fn completions(mut cmd: clap::Command, a: &CompletionsArgs) -> anyhow::Result<()> {
    clap_complete::generate(a.shell, &mut cmd, "imgforge", &mut std::io::stdout());
    Ok(())
}

/// Writes one page for the program and one per visible subcommand.
pub fn manpages(cmd: clap::Command, a: &ManpagesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("Failed to create {}", a.dir.display()))?;
    let cmd = cmd.disable_help_subcommand(true);
    write_page(&cmd, &a.dir.join("imgforge.1"))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("imgforge-{}", sub.get_name());
        let page = sub.clone().name(name.clone());
        write_page(&page, &a.dir.join(format!("{name}.1")))?;
    }
    Ok(())
}

fn write_page(cmd: &clap::Command, path: &std::path::Path) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf).with_context(|| format!("Failed to render {}", path.display()))?;
    std::fs::write(path, buf).with_context(|| format!("Failed to write {}", path.display()))
}
