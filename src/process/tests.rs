//! Unit tests of the portable part of `process`.

use std::path::{Path, PathBuf};

use super::*;

#[test]
fn path_hashes_are_fnv_1a() {
    // Known values of 64-bit FNV-1a.
    assert_eq!(path_hash(Path::new("")), 0xcbf2_9ce4_8422_2325);
    assert_eq!(path_hash(Path::new("a")), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(path_hash(Path::new("foobar")), 0x8594_4171_f739_67e8);
}

#[test]
fn a_long_preferred_socket_dir_gives_way_to_the_first_short_root() {
    let short = Path::new("/home/me/.local/state/ocx/ssh");
    let roots = [PathBuf::from("/run/user/1000"), PathBuf::from("/tmp")];
    assert_eq!(pick_socket_dir(short, "ocx-ssh-1", 57, &roots), None);
    let long = PathBuf::from(format!("/home/{}/ocx/ssh", "x".repeat(60)));
    assert_eq!(pick_socket_dir(&long, "ocx-ssh-1", 57, &roots), Some(roots[0].join("ocx-ssh-1")));
    // A runtime directory too long itself is passed over.
    let roots = [PathBuf::from(format!("/run/{}", "y".repeat(60))), PathBuf::from("/tmp")];
    assert_eq!(pick_socket_dir(&long, "ocx-ssh-1", 57, &roots), Some(roots[1].join("ocx-ssh-1")));
}

#[test]
fn only_a_refusal_that_passes_is_tried_again() {
    assert!(spawn::is_transient(&io::Error::from(io::ErrorKind::WouldBlock)));
    assert!(!spawn::is_transient(&io::Error::from(io::ErrorKind::NotFound)));
    assert_eq!(spawn::is_transient(&io::Error::from_raw_os_error(1359)), cfg!(windows));
    let err = spawn(&mut std::process::Command::new("/nonexistent/ocx-no-such-binary")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}
