//! Which analysed functions are `SSL_write`, `SSL_read` (and `SSL_shutdown`),
//! by the `OPENSSL_PUT_ERROR` calls of `ssl/ssl_lib.cc` they make, their
//! order in the source file, their call graph and their use of arguments.
//!
//! The reasons are `BoringSSL`'s public error codes (`include/openssl/ssl.h`,
//! `err.h`): they are part of its ABI and never renumbered. Line numbers
//! change between versions, but the order of the functions in `ssl_lib.cc`
//! has not: `ssl_read_impl`, `SSL_read`, `SSL_peek`, `SSL_write`, …,
//! `SSL_shutdown`.

use std::collections::BTreeMap;

use super::{
    flow::{self, ErrSite, FlowError, Function},
    image::Image,
    xref,
};

/// `ERR_LIB_SSL`.
pub const LIB_SSL: u64 = 16;
/// `ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED` (`2 | ERR_R_FATAL`): the QUIC check.
pub const SHOULD_NOT_HAVE_BEEN_CALLED: u64 = 66;
/// `SSL_R_UNINITIALIZED`.
pub const UNINITIALIZED: u64 = 226;
/// `SSL_R_SSL_HANDSHAKE_FAILURE`.
pub const HANDSHAKE_FAILURE: u64 = 215;
/// `SSL_R_BAD_LENGTH`.
pub const BAD_LENGTH: u64 = 111;
/// `SSL_R_APPLICATION_DATA_ON_SHUTDOWN`.
pub const APPLICATION_DATA_ON_SHUTDOWN: u64 = 291;
/// `SSL_R_NO_RENEGOTIATION`, `SSL_R_BAD_HELLO_REQUEST`: the errors of
/// `ssl_do_post_handshake`, right before `ssl_read_impl` in the file and
/// inlined into it by some builds (Bun 1.2, 1.3).
pub const NO_RENEGOTIATION: u64 = 182;
pub const BAD_HELLO_REQUEST: u64 = 110;

/// How far back from an error site its function's entry is looked for,
/// and how many padded starts are tried on the way.
const ENTRY_WINDOW: u64 = 256 * 1024;
const ENTRY_TRIES: usize = 6;

/// Why the offsets were not trusted. Each names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no instruction loads the ssl_lib.cc file name")]
    NoErrorSites,
    #[error(
        "no function matches SSL_write's error calls (reasons 66?,226,215,111 in source order)"
    )]
    NoWrite,
    #[error("{0} functions match SSL_write's error calls")]
    AmbiguousWrite(usize),
    #[error(
        "no function matches ssl_read_impl's error calls (reasons 226,215 before SSL_write's)"
    )]
    NoReadImpl,
    #[error("{0} functions match ssl_read_impl's error calls")]
    AmbiguousReadImpl(usize),
    #[error(
        "no function calls ssl_read_impl with SSL_peek's error call and consumes what it read"
    )]
    NoRead,
    #[error("{0} functions match SSL_read")]
    AmbiguousRead(usize),
    #[error("{name} at {entry:#x}: {what}")]
    Check {
        name: &'static str,
        entry: u64,
        what: &'static str,
    },
    #[error("analysis of {name} at {entry:#x} failed: {source}")]
    Flow {
        name: &'static str,
        entry: u64,
        #[source]
        source: FlowError,
    },
}

/// A function proven to be what its name says, with how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    pub entry: u64,
    pub evidence: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub write: Proven,
    pub read: Proven,
    /// `SSL_shutdown`, when it is as clear as the other two.
    pub shutdown: Option<Proven>,
    /// `ssl_read_impl`, which `SSL_read`'s proof goes through (kept so a
    /// cached answer can be proven again).
    pub read_impl: u64,
    /// How many functions were analysed, and loads of the file name that
    /// no analysed function contains (byte-scan noise, or code not
    /// understood).
    pub functions: usize,
    pub orphan_loads: usize,
}

/// The error sites of one function that name `ssl_lib.cc` with a readable
/// library, reason and line, in source (line) order; None when any of its
/// sites is unreadable (its signature cannot be trusted).
fn clean_sites(f: &Function) -> Option<Vec<(u64, u64)>> {
    if f.unresolved_loads > 0 {
        return None;
    }
    let mut out = Vec::new();
    for s in &f.sites {
        match (s.lib, s.reason, s.line) {
            (Some(LIB_SSL), Some(r), Some(l)) => out.push((l, r)),
            _ => return None,
        }
    }
    out.sort_unstable();
    Some(out)
}

fn reasons(sites: &[(u64, u64)]) -> Vec<u64> {
    sites.iter().map(|&(_, r)| r).collect()
}

/// Finds every function that makes an error call naming one of `files`.
fn functions(img: &Image<'_>, files: &[u64]) -> Result<(BTreeMap<u64, Function>, usize), Refusal> {
    let mut loads = Vec::new();
    for &f in files {
        loads.extend(xref::address_loads(img, f));
    }
    if loads.is_empty() {
        return Err(Refusal::NoErrorSites);
    }
    let mut funcs: BTreeMap<u64, Function> = BTreeMap::new();
    let mut failed: BTreeMap<u64, FlowError> = BTreeMap::new();
    let mut orphans = 0;
    for r in loads {
        if funcs.values().any(|f| f.contains(r)) {
            continue;
        }
        let mut placed = false;
        for a in xref::padded_starts_before(img, r, ENTRY_TRIES, ENTRY_WINDOW) {
            if let Some(f) = funcs.get(&a) {
                if f.contains(r) {
                    placed = true;
                    break;
                }
                continue;
            }
            if failed.contains_key(&a) {
                continue;
            }
            match flow::analyze(img, a, files) {
                Ok(f) => {
                    let has = f.contains(r);
                    funcs.insert(a, f);
                    if has {
                        placed = true;
                        break;
                    }
                }
                Err(e) => {
                    failed.insert(a, e);
                }
            }
        }
        if !placed {
            orphans += 1;
        }
    }
    Ok((funcs, orphans))
}

/// Error sites of each analysed function (line, reason), in line order.
type Sites = BTreeMap<u64, Vec<(u64, u64)>>;

/// The one entry `pick` accepts, or the refusal for none or several.
fn unique<T: Copy>(
    found: &[T],
    none: Refusal,
    many: impl FnOnce(usize) -> Refusal,
) -> Result<T, Refusal> {
    match found {
        [one] => Ok(*one),
        [] => Err(none),
        more => Err(many(more.len())),
    }
}

/// `SSL_write`: [66,] 226, 215, 111 in source order, in one function.
fn match_write(sites: &Sites) -> Result<u64, Refusal> {
    let writes: Vec<u64> = sites
        .iter()
        .filter(|(_, s)| {
            let r = reasons(s);
            r == [
                SHOULD_NOT_HAVE_BEEN_CALLED,
                UNINITIALIZED,
                HANDSHAKE_FAILURE,
                BAD_LENGTH,
            ] || r == [UNINITIALIZED, HANDSHAKE_FAILURE, BAD_LENGTH]
        })
        .map(|(&a, _)| a)
        .collect();
    unique(&writes, Refusal::NoWrite, Refusal::AmbiguousWrite)
}

/// `ssl_read_impl`: 226 then 215, both before `SSL_write` in the file
/// (after `ssl_do_post_handshake`'s 182, 110 when it is inlined).
fn match_read_impl(sites: &Sites, write_first_line: u64) -> Result<u64, Refusal> {
    let impls: Vec<u64> = sites
        .iter()
        .filter(|(_, s)| {
            let r = reasons(s);
            (r == [UNINITIALIZED, HANDSHAKE_FAILURE]
                || r == [
                    NO_RENEGOTIATION,
                    BAD_HELLO_REQUEST,
                    UNINITIALIZED,
                    HANDSHAKE_FAILURE,
                ])
                && s.last().is_some_and(|&(l, _)| l < write_first_line)
        })
        .map(|(&a, _)| a)
        .collect();
    unique(&impls, Refusal::NoReadImpl, Refusal::AmbiguousReadImpl)
}

/// `SSL_read`: `SSL_peek`'s QUIC check (66) between `ssl_read_impl` and
/// `SSL_write` in the file, a direct call of `ssl_read_impl`, and a write to
/// the connection after it (`SSL_read` consumes; `SSL_peek` does not).
/// Returns the entry and the call.
fn match_read(
    funcs: &BTreeMap<u64, Function>,
    sites: &Sites,
    read_impl: u64,
    write_first_line: u64,
) -> Result<(u64, u64), Refusal> {
    let impl_last_line = sites[&read_impl].last().map_or(0, |&(l, _)| l);
    let reads: Vec<(u64, u64)> = sites
        .iter()
        .filter(|(_, s)| {
            reasons(s) == [SHOULD_NOT_HAVE_BEEN_CALLED]
                && s[0].0 > impl_last_line
                && s[0].0 < write_first_line
        })
        .filter_map(|(&a, _)| {
            let f = &funcs[&a];
            let call = f.calls.iter().find(|&&(_, t)| t == read_impl)?.0;
            f.stores_after(call).then_some((a, call))
        })
        .collect();
    unique(&reads, Refusal::NoRead, Refusal::AmbiguousRead)
}

/// `SSL_shutdown`: calls `ssl_read_impl`; 226 then 291, after `SSL_write`.
fn match_shutdown(
    funcs: &BTreeMap<u64, Function>,
    sites: &Sites,
    read_impl: u64,
    write_first_line: u64,
) -> Vec<u64> {
    sites
        .iter()
        .filter(|(_, s)| {
            reasons(s) == [UNINITIALIZED, APPLICATION_DATA_ON_SHUTDOWN] && s[0].0 > write_first_line
        })
        .filter(|(a, _)| funcs[a].calls.iter().any(|&(_, t)| t == read_impl))
        .map(|(&a, _)| a)
        .collect()
}

/// Proves which functions are `SSL_write` and `SSL_read`.
pub fn find(img: &Image<'_>, files: &[u64]) -> Result<Found, Refusal> {
    let (funcs, orphan_loads) = functions(img, files)?;
    prove(img, &funcs, orphan_loads)
}

/// The entries an earlier [`find`] proved, as the disk cache keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entries {
    pub write: u64,
    pub read: u64,
    pub read_impl: u64,
    pub shutdown: Option<u64>,
}

/// Proves a remembered answer again on this image: the named functions are
/// decoded and put through every check [`find`] makes of them (error
/// calls, source order, call graph, entry checks). What a cached answer
/// cannot repeat is the uniqueness of each match over the whole file: it
/// was established when the answer was first found for this build.
pub fn verify(img: &Image<'_>, files: &[u64], e: Entries) -> Result<Found, Refusal> {
    let mut funcs = BTreeMap::new();
    let named = [
        ("SSL_write", Some(e.write)),
        ("SSL_read", Some(e.read)),
        ("ssl_read_impl", Some(e.read_impl)),
        ("SSL_shutdown", e.shutdown),
    ];
    for (name, entry) in named {
        let Some(entry) = entry else { continue };
        let f = flow::analyze(img, entry, files).map_err(|source| Refusal::Flow {
            name,
            entry,
            source,
        })?;
        funcs.insert(entry, f);
    }
    let found = prove(img, &funcs, 0)?;
    let same = found.write.entry == e.write
        && found.read.entry == e.read
        && found.read_impl == e.read_impl
        && found.shutdown.as_ref().map(|s| s.entry) == e.shutdown;
    if !same {
        return Err(Refusal::Check {
            name: "SSL_write/SSL_read",
            entry: e.write,
            what: "the cached entries do not prove the same functions again",
        });
    }
    Ok(found)
}

/// Names `SSL_write`, `SSL_read` (and `SSL_shutdown`) among the analysed
/// functions and checks their entries.
fn prove(
    img: &Image<'_>,
    funcs: &BTreeMap<u64, Function>,
    orphan_loads: usize,
) -> Result<Found, Refusal> {
    let sites: Sites = funcs
        .iter()
        .filter_map(|(&a, f)| clean_sites(f).map(|s| (a, s)))
        .collect();
    let write = match_write(&sites)?;
    let write_first_line = sites[&write][0].0;
    let read_impl = match_read_impl(&sites, write_first_line)?;
    let (read, read_call) = match_read(funcs, &sites, read_impl, write_first_line)?;
    let shutdowns = match_shutdown(funcs, &sites, read_impl, write_first_line);

    // The same error function behind every site of the three.
    let err_fn = common_callee(&[&funcs[&write], &funcs[&read_impl], &funcs[&read]]).ok_or(
        Refusal::Check {
            name: "SSL_write/ssl_read_impl/SSL_read",
            entry: write,
            what: "their error calls do not all go to one ERR_put_error",
        },
    )?;
    let entries: Vec<u64> = [write, read, read_impl]
        .into_iter()
        .chain(shutdowns.first().copied())
        .collect();
    let refs = xref::direct_refs(img, &entries);
    let callers = |a: u64| refs.iter().find(|r| r.0 == a).map_or(0, |r| r.1);

    let write_ev = check_entry(img, "SSL_write", &funcs[&write], callers(write), err_fn)?;
    let read_ev = check_entry(img, "SSL_read", &funcs[&read], callers(read), err_fn)?;
    let shutdown = match shutdowns.as_slice() {
        [s] => check_close(&funcs[s], callers(*s), err_fn).map(|ev| Proven {
            entry: *s,
            evidence: ev,
        }),
        _ => None,
    };
    Ok(Found {
        write: Proven {
            entry: write,
            evidence: format!("{write_ev}; error calls at lines {}", lines(&sites[&write])),
        },
        read: Proven {
            entry: read,
            evidence: format!(
                "{read_ev}; SSL_peek's check at line {}, calls ssl_read_impl at {read_impl:#x} \
                 (error lines {}) from {read_call:#x}, then writes the connection",
                sites[&read][0].0,
                lines(&sites[&read_impl])
            ),
        },
        shutdown,
        read_impl,
        functions: funcs.len(),
        orphan_loads,
    })
}

fn lines(s: &[(u64, u64)]) -> String {
    s.iter()
        .map(|(l, r)| format!("{l}:{r}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The one direct callee behind every error site of `fs`.
fn common_callee(fs: &[&Function]) -> Option<u64> {
    let mut callee = None;
    for f in fs {
        for ErrSite { callee: c, .. } in &f.sites {
            let c = (*c)?;
            if callee.is_some_and(|k| k != c) {
                return None;
            }
            callee = Some(c);
        }
    }
    callee
}

/// The checks every hooked entry passes: it is where functions start (after
/// int3 padding, 16-byte aligned), something calls it directly, it opens a
/// frame, reads `(ssl, buf, num)` as arguments, and its CFG is complete.
fn check_entry(
    img: &Image<'_>,
    name: &'static str,
    f: &Function,
    callers: u32,
    err_fn: u64,
) -> Result<String, Refusal> {
    let fail = |what| Refusal::Check {
        name,
        entry: f.entry,
        what,
    };
    if !xref::is_padded_start(img, f.entry) {
        return Err(fail("not at a padded function start"));
    }
    if callers == 0 {
        return Err(fail("no direct call reaches it"));
    }
    if !f.has_prologue() {
        return Err(fail("no frame-setting prologue"));
    }
    if f.args_read != [true, true, true] {
        return Err(fail("does not read (ssl, buf, num) as arguments"));
    }
    if f.indirect_jumps > 0 {
        return Err(fail("has indirect jumps: its code is not fully known"));
    }
    if f.entry == err_fn {
        return Err(fail("is the error function itself"));
    }
    Ok(format!(
        "{name} at {:#x}: {} instructions, {} direct callers, frame prologue, reads rdi/rsi/rdx, \
         error calls to {err_fn:#x}",
        f.entry,
        f.instructions(),
        callers
    ))
}

fn check_close(f: &Function, callers: u32, err_fn: u64) -> Option<String> {
    let ok = callers > 0
        && f.has_prologue()
        && f.args_read[0]
        && f.sites.iter().all(|s| s.callee == Some(err_fn));
    ok.then(|| {
        format!(
            "SSL_shutdown at {:#x}: calls ssl_read_impl, error reasons 226,291 after SSL_write, \
             {callers} direct callers",
            f.entry
        )
    })
}
