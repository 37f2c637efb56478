//! The DNS response parser: a model of what it must return, random
//! well-formed responses built by an encoder of this test's own (with name
//! compression, CNAMEs, unrelated records, mixed case), and garbage and
//! mutated responses that must never make it panic.

use proptest::prelude::*;
use skyhouse_identity::dns::{parse_txt_response, txt_query, DnsError, TxtAnswer};

/// A name: lower-case labels.
fn name() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-z0-9_-]{1,12}", 1..5)
}

fn wire(labels: &[String], upper: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for l in labels {
        out.push(l.len() as u8);
        if upper {
            out.extend(l.to_ascii_uppercase().bytes());
        } else {
            out.extend(l.bytes());
        }
    }
    out.push(0);
    out
}

#[derive(Debug, Clone)]
enum Owner {
    /// The question's name, written as a pointer to it (offset 12).
    QuestionPointer,
    /// The question's name written out (maybe upper case).
    Question { upper: bool },
    /// The CNAME target (written out).
    Target,
    /// Some other name.
    Other(Vec<String>),
}

#[derive(Debug, Clone)]
enum Data {
    /// A TXT record: its character-strings.
    Txt(Vec<Vec<u8>>),
    /// An A record.
    A([u8; 4]),
}

#[derive(Debug, Clone)]
struct Answer {
    owner: Owner,
    data: Data,
}

#[derive(Debug, Clone)]
struct Response {
    question: Vec<String>,
    /// A CNAME from the question to this name, first in the answer section.
    cname: Option<Vec<String>>,
    answers: Vec<Answer>,
    nxdomain: bool,
    /// An OPT record in the additional section.
    opt: bool,
}

fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        3 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4).prop_map(Data::Txt),
        1 => any::<[u8; 4]>().prop_map(Data::A),
    ]
}

fn owner() -> impl Strategy<Value = Owner> {
    prop_oneof![
        Just(Owner::QuestionPointer),
        any::<bool>().prop_map(|upper| Owner::Question { upper }),
        Just(Owner::Target),
        name().prop_map(Owner::Other),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    (
        name(),
        prop::option::of(name()),
        prop::collection::vec(
            (owner(), data()).prop_map(|(owner, data)| Answer { owner, data }),
            0..6,
        ),
        prop::bool::weighted(0.1),
        any::<bool>(),
    )
        .prop_map(|(question, cname, answers, nxdomain, opt)| Response {
            // The target must differ from the question (else the "CNAME" is a loop).
            cname: cname.filter(|c| *c != question),
            question,
            answers,
            nxdomain,
            opt,
        })
}

impl Response {
    fn dotted(&self) -> String {
        self.question.join(".")
    }

    fn encode(&self, id: u16) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&id.to_be_bytes());
        let flags: u16 = 0x8180 | if self.nxdomain { 3 } else { 0 };
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        let ancount = self.answers.len() + usize::from(self.cname.is_some());
        out.extend_from_slice(&(ancount as u16).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&u16::from(self.opt).to_be_bytes());
        out.extend_from_slice(&wire(&self.question, false));
        out.extend_from_slice(&[0, 16, 0, 1]);
        let target = self.cname.clone().unwrap_or_else(|| vec!["nowhere".into()]);
        if let Some(t) = &self.cname {
            out.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60]);
            let rdata = wire(t, false);
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(&rdata);
        }
        for a in &self.answers {
            match &a.owner {
                Owner::QuestionPointer => out.extend_from_slice(&[0xC0, 12]),
                Owner::Question { upper } => out.extend_from_slice(&wire(&self.question, *upper)),
                Owner::Target => out.extend_from_slice(&wire(&target, false)),
                Owner::Other(n) => out.extend_from_slice(&wire(n, false)),
            }
            let (rtype, rdata) = match &a.data {
                Data::Txt(strings) => {
                    let mut r = Vec::new();
                    for s in strings {
                        r.push(s.len() as u8);
                        r.extend_from_slice(s);
                    }
                    (16u16, r)
                }
                Data::A(ip) => (1u16, ip.to_vec()),
            };
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(&rdata);
        }
        if self.opt {
            out.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
        }
        out
    }

    /// What the parser must find.
    fn expected(&self) -> TxtAnswer {
        if self.nxdomain {
            return TxtAnswer::NxDomain;
        }
        let target = self.cname.clone();
        let txt_of = |want: &dyn Fn(&Owner) -> bool| -> Vec<Vec<u8>> {
            self.answers
                .iter()
                .filter(|a| want(&a.owner))
                .filter_map(|a| match &a.data {
                    Data::Txt(s) => Some(s.concat()),
                    Data::A(_) => None,
                })
                .collect()
        };
        let q = self.question.clone();
        let at_question = txt_of(&|o: &Owner| match o {
            Owner::QuestionPointer | Owner::Question { .. } => true,
            Owner::Other(n) => *n == q,
            Owner::Target => target.as_ref().is_none_or(|_| false) && q == ["nowhere"],
        });
        if !at_question.is_empty() {
            return TxtAnswer::Records(at_question);
        }
        match &target {
            None => TxtAnswer::Records(Vec::new()),
            Some(t) => TxtAnswer::Records(txt_of(&|o: &Owner| match o {
                Owner::Target => true,
                Owner::Other(n) => n == t,
                _ => false,
            })),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn well_formed_responses_parse_as_the_model_says(r in response(), id in any::<u16>()) {
        let bytes = r.encode(id);
        prop_assert_eq!(parse_txt_response(&bytes, id, &r.dotted()), Ok(r.expected()));
        // The same bytes answer no other query.
        prop_assert!(matches!(
            parse_txt_response(&bytes, id.wrapping_add(1), &r.dotted()),
            Err(DnsError::Mismatch(_))
        ));
        let other = ["x", &r.dotted()].join(".");
        let answer = parse_txt_response(&bytes, id, &other);
        prop_assert!(matches!(answer, Err(DnsError::Mismatch(_))), "{:?}", answer);
    }

    #[test]
    fn cut_or_mutated_responses_never_panic(
        r in response(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut bytes = r.encode(7);
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let n = cut.index(bytes.len() + 1);
        let _ = parse_txt_response(&bytes[..n], 7, &r.dotted());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), id in any::<u16>()) {
        let _ = parse_txt_response(&bytes, id, "_atproto.alice.example.com");
        // Also with the right header and question in front, so the answer
        // section is what is random.
        let mut framed = txt_query(id, "_atproto.alice.example.com").expect("query");
        framed.truncate(framed.len() - 11); // drop the OPT record
        framed[2] = 0x81;
        framed[3] = 0x80;
        framed[6] = bytes.first().copied().unwrap_or(0);
        framed[7] = bytes.get(1).copied().unwrap_or(0);
        framed[11] = 0;
        framed.extend_from_slice(&bytes);
        let _ = parse_txt_response(&framed, id, "_atproto.alice.example.com");
    }
}

#[test]
fn truncated_and_failed_answers_are_errors() {
    let r = Response {
        question: vec!["_atproto".into(), "a".into(), "test".into()],
        cname: None,
        answers: Vec::new(),
        nxdomain: false,
        opt: false,
    };
    let mut bytes = r.encode(9);
    bytes[2] |= 0x02; // TC
    assert_eq!(
        parse_txt_response(&bytes, 9, "_atproto.a.test"),
        Err(DnsError::Truncated)
    );
    let mut bytes = r.encode(9);
    bytes[3] = 0x82; // SERVFAIL
    assert_eq!(
        parse_txt_response(&bytes, 9, "_atproto.a.test"),
        Err(DnsError::Rcode(2))
    );
    // Our own query is not an answer.
    let query = txt_query(9, "_atproto.a.test").expect("query");
    assert!(matches!(
        parse_txt_response(&query, 9, "_atproto.a.test"),
        Err(DnsError::Mismatch(_))
    ));
}
