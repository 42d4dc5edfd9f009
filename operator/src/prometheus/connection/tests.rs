//! The connection's pieces without a network: header parsing, refused files and identities,
//! and a token file read again when it rotates.

use std::path::PathBuf;

use super::*;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "invoiceops-connection-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_header_flag_is_name_equals_value_and_the_value_may_hold_equals_signs() {
    assert_eq!(
        parse_header("X-Scope-OrgID=billing"),
        Ok(("X-Scope-OrgID".to_owned(), "billing".to_owned()))
    );
    assert_eq!(
        parse_header("X-Extra=a=b"),
        Ok(("X-Extra".to_owned(), "a=b".to_owned()))
    );
    assert!(parse_header("no-equals-sign").is_err());
    assert!(parse_header("bad name=x").is_err());
    assert!(parse_header("X-Ok=line\nbreak").is_err());
}

#[test]
fn authorization_is_not_an_extra_header_and_invalid_ones_are_named() {
    let headers = |name: &str, value: &str| vec![(name.to_owned(), value.to_owned())];
    assert!(matches!(
        header_map(&headers("authorization", "Bearer x")),
        Err(Error::AuthorizationHeader)
    ));
    match header_map(&headers("X-Tenant", "a\nb")) {
        Err(Error::InvalidHeader { name }) => assert_eq!(name, "X-Tenant"),
        other => panic!("{other:?}"),
    }
    let map = header_map(&headers("X-Scope-OrgID", "billing")).unwrap();
    assert_eq!(map["x-scope-orgid"], "billing");
    assert!(map["x-scope-orgid"].is_sensitive());
}

fn client(connection: &Connection) -> Result<reqwest::Client, Error> {
    connection.http_client(|builder| builder)
}

#[test]
fn unreadable_or_malformed_files_fail_at_startup_with_their_path() {
    let scratch = Scratch::new("files");
    let missing = scratch.0.join("missing.pem");
    let connection = Connection {
        ca_file: Some(missing.clone()),
        ..Connection::default()
    };
    match client(&connection) {
        Err(Error::ReadFile { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    let garbage = scratch.file("garbage.pem", "not a certificate\n");
    let connection = Connection {
        ca_file: Some(garbage.clone()),
        ..Connection::default()
    };
    match client(&connection) {
        Err(Error::NoCertificate { path } | Error::Certificate { path, .. }) => {
            assert_eq!(path, garbage)
        }
        other => panic!("{other:?}"),
    }
    let half = Connection {
        client_key: Some(garbage),
        ..Connection::default()
    };
    assert!(matches!(client(&half), Err(Error::HalfAClientIdentity)));
}

#[test]
fn an_empty_or_missing_token_file_is_refused_at_startup() {
    let scratch = Scratch::new("empty-token");
    let empty = scratch.file("token", " \n");
    assert!(matches!(
        TokenFile::open(&empty),
        Err(Error::EmptyToken { .. })
    ));
    assert!(matches!(
        TokenFile::open(&scratch.0.join("none")),
        Err(Error::ReadFile { .. })
    ));
    let bad = scratch.file("bad", "a\u{7}b");
    assert!(matches!(TokenFile::open(&bad), Err(Error::InvalidToken)));
}

#[test]
fn a_rotated_token_is_used_from_the_next_request_and_a_broken_one_keeps_the_last() {
    let scratch = Scratch::new("rotation");
    let path = scratch.file("token", "first\n");
    let token = TokenFile::open(&path).unwrap();
    assert_eq!(token.header(), "Bearer first");
    // Kubernetes swaps the file atomically: write beside it and rename over it.
    let next = scratch.file("token.next", "second-token\n");
    std::fs::rename(&next, &path).unwrap();
    assert_eq!(token.header(), "Bearer second-token");
    assert!(token.header().is_sensitive());
    // Emptied (a half-written update) or removed: the last good token stays.
    std::fs::write(&path, "").unwrap();
    assert_eq!(token.header(), "Bearer second-token");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(token.header(), "Bearer second-token");
    // Back, with a new value.
    std::fs::write(&path, "third\n").unwrap();
    assert_eq!(token.header(), "Bearer third");
}
