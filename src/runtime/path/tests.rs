use super::*;

fn norm(p: &str) -> Result<String, PathError> {
    normalize_path(p).map(Cow::into_owned)
}

fn assert_borrowed(p: &str) {
    match normalize_path(p) {
        Ok(Cow::Borrowed(s)) => assert_eq!(s, p),
        other => panic!("{p:?}: expected borrowed, got {other:?}"),
    }
}

fn assert_norm(p: &str, want: &str) {
    match normalize_path(p) {
        Ok(Cow::Owned(s)) => assert_eq!(s, want, "input {p:?}"),
        other => panic!("{p:?}: expected owned {want:?}, got {other:?}"),
    }
}

#[test]
fn clean_paths_are_borrowed() {
    for p in [
        "/",
        "/a",
        "/a/b/c",
        "/a/",
        "/v1/payments/123",
        "/a%20b",
        "/%C3%A9t%C3%A9",
        "/a.b",
        "/.well-known/openid-configuration",
        "/a..b",
        "/...",
        "/a/.../b",
        "/.a/..b/b.",
        "/a%25b",
        "/%252F",
        "/a:b@c!$&'()*+,=",
        "/é",
    ] {
        assert_borrowed(p);
    }
}

#[test]
fn not_absolute() {
    for p in ["", "a", "a/b", "*", "%2F", "./a", "http://x/a"] {
        assert_eq!(norm(p), Err(PathError::NotAbsolute), "{p:?}");
    }
}

#[test]
fn bad_percent_encoding() {
    for p in [
        "/%", "/%2", "/a%", "/a%4", "/%zz", "/%2g", "/%g2", "/%%41", "/a/%-1",
    ] {
        assert_eq!(norm(p), Err(PathError::BadPercentEncoding), "{p:?}");
    }
}

#[test]
fn encoded_slash() {
    for p in ["/a%2Fb", "/a%2fb", "/%2F", "/a/%2f/../b"] {
        assert_eq!(norm(p), Err(PathError::EncodedSlash), "{p:?}");
    }
}

#[test]
fn backslash() {
    for p in ["/a\\b", "/\\", "/a%5Cb", "/a%5cb", "/..\\.."] {
        assert_eq!(norm(p), Err(PathError::Backslash), "{p:?}");
    }
}

#[test]
fn control_chars_and_space() {
    for p in [
        "/a b", "/a\tb", "/a\nb", "/a\rb", "/\0", "/a\x7f", "/a%00", "/a%0a", "/a%0D", "/a%1F",
        "/a%1f", "/a%7f", "/a%7F", " /a",
    ] {
        let want = if p.starts_with('/') {
            PathError::ControlChar
        } else {
            PathError::NotAbsolute
        };
        assert_eq!(norm(p), Err(want), "{p:?}");
    }
    // An encoded space is a legitimate character and is kept.
    assert_borrowed("/a%20b");
}

#[test]
fn decodes_unreserved() {
    assert_norm("/%41%5A%61%7a%30%39", "/AZaz09");
    assert_norm("/%2D%5F%7E", "/-_~");
    assert_norm("/%7euser", "/~user");
    assert_norm("/a%2Eb", "/a.b");
    assert_norm("/v1/pay%6Dents", "/v1/payments");
}

#[test]
fn keeps_other_escapes_uppercased() {
    assert_norm("/%3a", "/%3A");
    assert_norm("/%c3%a9", "/%C3%A9");
    assert_norm("/a%2cb%3Ac", "/a%2Cb%3Ac");
    assert_norm("/%f0%9f%98%80", "/%F0%9F%98%80");
    assert_norm("/%e2%82%AC", "/%E2%82%AC");
    // Decoding happens once: %25 stays %25, so %252F is not a slash.
    assert_borrowed("/%252F");
    assert_borrowed("/%252f");
    assert_norm("/%25%2e", "/%25.");
}

#[test]
fn dot_segments() {
    assert_norm("/a/./b", "/a/b");
    assert_norm("/./a", "/a");
    assert_norm("/a/../b", "/b");
    assert_norm("/a/b/../../c", "/c");
    assert_norm("/a/b/..", "/a/");
    assert_norm("/a/b/../", "/a/");
    assert_norm("/a/.", "/a/");
    assert_norm("/a/./", "/a/");
    assert_norm("/a/..", "/");
    assert_norm("/a/../", "/");
    assert_norm("/.", "/");
    assert_norm("/./", "/");
    assert_norm("/./.", "/");
    assert_norm("/a/b/./../c/.", "/a/c/");
}

#[test]
fn encoded_dot_segments() {
    assert_norm("/a/%2e/b", "/a/b");
    assert_norm("/a/%2e%2E/b", "/b");
    assert_norm("/a/.%2e/b", "/b");
    assert_norm("/a/%2E./b", "/b");
    assert_norm("/a/%2e%2e", "/");
    assert_eq!(norm("/%2e%2e/"), Err(PathError::AboveRoot));
    assert_eq!(norm("/%2e%2e"), Err(PathError::AboveRoot));
    assert_eq!(
        norm("/a/%2E%2E/%2e%2e/etc/passwd"),
        Err(PathError::AboveRoot)
    );
    // Three dots are an ordinary segment.
    assert_norm("/a/%2e%2e%2e", "/a/...");
}

#[test]
fn above_root() {
    for p in [
        "/..",
        "/../",
        "/../a",
        "/a/../..",
        "/a/../../b",
        "/a/b/../../../c",
        "/./..",
        "//..",
        "/a//../..",
    ] {
        assert_eq!(norm(p), Err(PathError::AboveRoot), "{p:?}");
    }
}

#[test]
fn slashes_collapse_and_trailing_slash_is_kept() {
    assert_norm("//", "/");
    assert_norm("///", "/");
    assert_norm("//a", "/a");
    assert_norm("/a//b", "/a/b");
    assert_norm("///a///b//", "/a/b/");
    assert_norm("/a//", "/a/");
    assert_borrowed("/a/");
    assert_borrowed("/a/b/");
    // Slashes collapse before `..` pops: `/a//..` is `/a/..`.
    assert_norm("/a//../b", "/b");
    assert_norm("/a/.//b", "/a/b");
}

#[test]
fn validation_runs_over_the_whole_path_first() {
    assert_eq!(norm("/../%2F"), Err(PathError::EncodedSlash));
    assert_eq!(norm("/a/./b c"), Err(PathError::ControlChar));
    assert_eq!(norm("//a%"), Err(PathError::BadPercentEncoding));
    assert_eq!(norm("/%41/\\"), Err(PathError::Backslash));
}

#[test]
fn non_ascii_is_passed_through() {
    assert_borrowed("/café");
    assert_norm("/café/./x", "/café/x");
    assert_norm("/ü/%41", "/ü/A");
}

#[test]
fn semicolons_are_refused_raw_or_encoded() {
    for p in [
        "/a;b",
        "/admin/..;/x",
        "/..;/admin",
        "/a;jsessionid=ABC/b",
        "/a/b;",
        "/;",
        "/a%3bb",
        "/a%3B",
        "/a/%3B/../b",
        "/x/.;/y",
    ] {
        assert_eq!(norm(p), Err(PathError::Semicolon), "{p:?}");
    }
}

#[test]
fn escaped_bytes_must_be_utf8_without_overlong_forms() {
    for p in [
        // Overlong `/`, `.` and NUL.
        "/%c0%af",
        "/%C0%AF",
        "/a/%c0%ae%c0%ae/b",
        "/%e0%80%af",
        "/%f0%80%80%af",
        "/%c1%bf",
        "/%c0%80",
        // Lone continuation bytes, bad leads, truncated sequences.
        "/%80",
        "/%bf",
        "/%ff",
        "/%fe%ff",
        "/%f8%88%80%80%80",
        "/%c3",
        "/%c3/",
        "/%e2%82",
        "/%e2%82x",
        "/%c3%41",
        // A raw byte cannot finish an escaped sequence.
        "/%c3é",
        // Surrogates and code points above U+10FFFF.
        "/%ed%a0%80",
        "/%f4%90%80%80",
    ] {
        assert_eq!(norm(p), Err(PathError::BadUtf8), "{p:?}");
    }
    // A broken escape inside a sequence is reported as such.
    assert_eq!(norm("/%c3%g9"), Err(PathError::BadPercentEncoding));
    // Well-formed sequences are kept, uppercased.
    assert_borrowed("/caf%C3%A9");
    assert_borrowed("/%F4%8F%BF%BF");
    assert_norm("/%ed%9f%bf", "/%ED%9F%BF");
}

#[test]
fn display_is_short_text() {
    assert_eq!(PathError::EncodedSlash.to_string(), "encoded '/' in path");
    assert_eq!(PathError::AboveRoot.to_string(), "path climbs above '/'");
    assert_eq!(PathError::Backslash.to_string(), "'\\' in path");
}

/// Generated paths: the output is idempotent (normalising it again
/// borrows), has no empty or dot segments, and has no escapes that should
/// have been decoded or uppercased.
#[test]
fn generated_paths_are_idempotent() {
    const PIECES: &[&str] = &[
        "/", "/", "/", "a", "b", ".", "..", "%2e", "%2E", "%41", "%3a", "%7E", "%25", "x.y",
        "%C3%A9", "~",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut ok = 0;
    for _ in 0..20_000 {
        let len = (next() % 12) as usize;
        let mut p = String::from("/");
        for _ in 0..len {
            p.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
        }
        let Ok(n) = normalize_path(&p) else {
            continue;
        };
        ok += 1;
        let n = n.into_owned();
        assert!(n.starts_with('/'), "{p:?} -> {n:?}");
        assert!(!n.contains("//"), "{p:?} -> {n:?}");
        for seg in n.split('/') {
            assert!(seg != "." && seg != "..", "{p:?} -> {n:?}");
        }
        for bad in ["%2e", "%2E", "%41", "%3a", "%7E"] {
            assert!(!n.contains(bad), "{p:?} -> {n:?}");
        }
        match normalize_path(&n) {
            Ok(Cow::Borrowed(again)) => assert_eq!(again, n),
            other => panic!("{p:?} -> {n:?} -> {other:?}"),
        }
    }
    assert!(ok > 5_000, "too few valid generated paths: {ok}");
}
