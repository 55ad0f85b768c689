use proptest::prelude::*;

use super::*;

/// The views as they were built before buffers were reused and ASCII
/// took a fast path: one `char` at a time, fresh vectors, a token
/// buffer. The reference the new builders must equal byte for byte,
/// ranges included.
/// Plain text and ranges, word text and ranges, signals.
type Views = (String, Vec<(u32, u32)>, String, Vec<(u32, u32)>, Signals);

fn reference(text: &str) -> Views {
    let mut p: Vec<(char, u32, u32)> = Vec::new();
    let mut sig = Signals::default();
    let (mut ascii_letter, mut folded) = (false, false);
    let ends_space = |p: &Vec<(char, u32, u32)>| p.last().is_some_and(|x| x.0 == ' ');
    let r = |i: usize, e: usize| (to_u32(i), to_u32(e));
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        if let Some(counts) = invisible(c) {
            if counts {
                if sig.invisible == 0 {
                    sig.invisible_span.0 = i;
                }
                sig.invisible += 1;
                sig.invisible_span.1 = end;
            }
            let cp = u32::from(c);
            if (0xE0020..=0xE007E).contains(&cp) {
                if let Some(a) = char::from_u32(cp - 0xE0000) {
                    p.push((a.to_ascii_lowercase(), r(i, end).0, r(i, end).1));
                }
            }
            continue;
        }
        let c = fullwidth(c).unwrap_or(c);
        if c.is_whitespace() {
            if ascii_letter && folded {
                sig.mixed_script += 1;
            }
            (ascii_letter, folded) = (false, false);
            if !p.is_empty() && !ends_space(&p) {
                p.push((' ', r(i, end).0, r(i, end).1));
            }
            continue;
        }
        if let Some(a) = homoglyph(c) {
            folded = true;
            p.push((a, r(i, end).0, r(i, end).1));
        } else if c.is_ascii() {
            ascii_letter |= c.is_ascii_alphabetic();
            p.push((c.to_ascii_lowercase(), r(i, end).0, r(i, end).1));
        } else {
            for l in c.to_lowercase() {
                p.push((l, r(i, end).0, r(i, end).1));
            }
        }
    }
    if ascii_letter && folded {
        sig.mixed_script += 1;
    }
    // Word view from the plain characters.
    let mut w: Vec<(char, u32, u32)> = Vec::new();
    let mut token: Vec<(char, u32, u32)> = Vec::new();
    let flush = |token: &mut Vec<(char, u32, u32)>, w: &mut Vec<(char, u32, u32)>| {
        let letters = token.iter().any(|(c, ..)| c.is_alphabetic());
        let any = token.iter().any(|(c, ..)| c.is_alphanumeric());
        if (letters || any) && w.last().is_some_and(|x| x.0 != ' ') {
            w.push((' ', token[0].1, token[0].1));
        }
        for &(c, s, e) in token.iter() {
            if letters {
                w.push((leet(c), s, e));
            } else if c.is_alphanumeric() {
                w.push((c, s, e));
            }
        }
        token.clear();
    };
    for &(c, s, e) in &p {
        if c.is_alphanumeric() || c == '@' || c == '$' {
            token.push((c, s, e));
        } else {
            flush(&mut token, &mut w);
        }
    }
    flush(&mut token, &mut w);
    let spell = |v: &[(char, u32, u32)]| {
        let text: String = v.iter().map(|x| x.0).collect();
        let map = v
            .iter()
            .flat_map(|&(c, s, e)| std::iter::repeat_n((s, e), c.len_utf8()))
            .collect();
        (text, map)
    };
    let (pt, pm) = spell(&p);
    let (wt, wm) = spell(&w);
    (pt, pm, wt, wm, sig)
}

fn check(n: &mut Norm, text: &str) {
    let (pt, pm, wt, wm, sig) = reference(text);
    n.build(text, Want::ALL);
    assert_eq!(n.plain.text, pt, "{text:?}");
    assert_eq!(n.plain.map, pm, "{text:?}");
    assert_eq!(n.word.text, wt, "{text:?}");
    assert_eq!(n.word.map, wm, "{text:?}");
    assert_eq!(n.signals, sig, "{text:?}");
    let fresh = Norm::new(text);
    assert_eq!(
        (fresh.plain.text, fresh.word.text),
        (pt.clone(), wt.clone())
    );
    // Without the word view or the ranges, the plain text is the same.
    n.build(
        text,
        Want {
            word: false,
            ranges: false,
        },
    );
    assert_eq!(n.plain.text, pt);
    assert!(n.word.text.is_empty() && n.plain.map.is_empty() && n.word.map.is_empty());
    assert_eq!(n.signals, sig);
}

/// The ASCII fast path rests on this: no ASCII character is invisible,
/// a fullwidth form or a lookalike.
#[test]
fn ascii_fast_path_is_the_general_path() {
    for b in 0u8..128 {
        let c = char::from(b);
        assert_eq!(invisible(c), None, "{b}");
        assert_eq!(fullwidth(c), None, "{b}");
        assert_eq!(homoglyph(c), None, "{b}");
    }
    let mut n = Norm::default();
    let all: String = (0u8..128).map(char::from).collect();
    check(&mut n, &all);
    check(
        &mut n,
        "Ｉgn\u{200b}ore   PREV-10US\tinstructions \u{E0041}\u{E0042} $@ 5@1e",
    );
    check(&mut n, "İstanbul ß ΑΒΓ о\u{0456} 1gn0r3 @ $ 42 x\u{3000}y");
    check(&mut n, "");
    check(&mut n, "   ");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Views built in reused buffers equal the reference, text after
    /// text, with every range.
    #[test]
    fn views_equal_the_reference(
        texts in proptest::collection::vec("\\PC{0,80}", 1..6),
        raw in proptest::collection::vec(any::<char>(), 0..80),
    ) {
        let mut n = Norm::default();
        for t in &texts {
            check(&mut n, t);
        }
        let raw: String = raw.into_iter().collect();
        check(&mut n, &raw);
    }
}
