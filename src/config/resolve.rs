//! Values that name things on this machine: users, groups and the worker
//! command. Checked at load so that `herd check` catches a typo before a
//! reload starts workers that cannot exist.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Group, User};

use super::value::{Expected, join};

/// An existing user's name, and whether it is root.
pub fn user(name: &str) -> Result<(String, bool), Expected> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok((u.name, u.uid.is_root())),
        Ok(None) => Err("expected a user that exists on this system".into()),
        Err(e) => Err(format!(
            "expected a user that exists on this system (lookup failed: {e})"
        )),
    }
}

/// A user's uid, for `listen.acl_users`.
pub fn uid(name: &str) -> Result<u32, Expected> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        _ => Err(format!(
            "expected users that exist on this system ('{name}' does not)"
        )),
    }
}

/// A group's gid, for `listen.acl_groups`.
pub fn gid(name: &str) -> Result<u32, Expected> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(format!(
            "expected groups that exist on this system ('{name}' does not)"
        )),
    }
}

pub fn group(name: &str) -> Result<String, Expected> {
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.name),
        Ok(None) => Err("expected a group that exists on this system".into()),
        Err(e) => Err(format!(
            "expected a group that exists on this system (lookup failed: {e})"
        )),
    }
}

/// The path this program was started from, found once. A package upgrade
/// that replaces the file makes the kernel report `/usr/bin/herd (deleted)`
/// from then on; the path itself, where the new build now is, is what a
/// reload starts (and `herd ctl upgrade` execs).
pub fn this_program() -> std::io::Result<PathBuf> {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(p) = PATH.get() {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe()?;
    let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => exe,
    };
    Ok(PATH.get_or_init(|| exe).clone())
}

/// The program `command` names. `herd` is always this herd binary, so the
/// built-in example app works without herd being in PATH. Other names
/// without a slash are looked up in PATH now; a path is read against
/// `base`. The result is not canonicalized: the supervisor resolves
/// symlinks at each generation, so repointing one rolls out a new build.
///
/// With a chroot the program is looked up inside it, where it will run.
pub fn command(v: &str, base: &Path, chroot: Option<&Path>) -> Result<PathBuf, Expected> {
    if let Some(root) = chroot {
        let inside = v
            .strip_prefix('/')
            .ok_or("expected an absolute path inside the chroot")?;
        executable(&root.join(inside))?;
        return Ok(PathBuf::from(v));
    }
    if v == "herd" {
        return this_program().map_err(|e| format!("expected this herd binary's path ({e})"));
    }
    if v.is_empty() {
        return Err("expected a program".into());
    }
    if !v.contains('/') {
        return search_path(v);
    }
    let path = join(base, v);
    executable(&path)?;
    Ok(path)
}

fn search_path(name: &str) -> Result<PathBuf, Expected> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| executable(candidate).is_ok())
        .ok_or_else(|| format!("expected a program in PATH ({})", path.to_string_lossy()))
}

/// Executable by someone: which user runs it is only settled at spawn.
fn executable(path: &Path) -> Result<(), Expected> {
    let shown = path.display();
    match fs::metadata(path) {
        Err(e) => Err(format!("expected an executable file ({shown}: {e})")),
        Ok(m) if !m.is_file() => Err(format!(
            "expected an executable file ({shown} is not a regular file)"
        )),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(format!(
            "expected an executable file ({shown} has no execute permission)"
        )),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herd_is_this_binary() {
        let me = std::env::current_exe().unwrap();
        assert_eq!(command("herd", Path::new("/nowhere"), None), Ok(me));
    }

    #[test]
    fn bare_names_come_from_path() {
        let sh = command("sh", Path::new("/nowhere"), None).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        let err = command("herd-no-such-program", Path::new("/"), None).unwrap_err();
        assert!(err.starts_with("expected a program in PATH"), "{err}");
    }

    #[test]
    fn paths_are_relative_to_the_config_and_must_be_executable() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("bin/app");
        fs::create_dir(dir.path().join("bin")).unwrap();
        fs::write(&app, "#!/bin/sh\n").unwrap();
        let err = command("./bin/app", dir.path(), None).unwrap_err();
        assert!(err.ends_with("has no execute permission)"), "{err}");
        fs::set_permissions(&app, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(command("./bin/app", dir.path(), None), Ok(app.clone()));
        assert!(command("bin", dir.path(), None).is_err());
        assert!(
            command("./bin", dir.path(), None)
                .unwrap_err()
                .contains("not a regular file")
        );
        // Symlinks are kept as written.
        std::os::unix::fs::symlink(&app, dir.path().join("current")).unwrap();
        assert_eq!(
            command("current", dir.path(), Some(Path::new("/"))).unwrap_err(),
            "expected an absolute path inside the chroot"
        );
        let link = dir.path().join("current");
        assert_eq!(
            command(link.to_str().unwrap(), Path::new("/"), None),
            Ok(link)
        );
    }

    #[test]
    fn users_and_groups_must_exist() {
        assert_eq!(user("root"), Ok(("root".to_string(), true)));
        assert!(user("herd-no-such-user").is_err());
        assert!(group("root").is_ok());
        assert!(group("herd-no-such-group").is_err());
    }
}
