//! The fast reader must agree with `Policy::parse` + `PolicyView::of` whenever it answers, and
//! must never accept a document the lossless parser rejects.

use super::*;
use crate::policy::rules::{EvalContext, KeyManager, evaluate, evaluate_policy};

const EXAMPLES: [(&str, &str); 6] = [
    (
        "default.json",
        include_str!("../../../examples/policies/default.json"),
    ),
    (
        "fixed.json",
        include_str!("../../../examples/policies/fixed.json"),
    ),
    (
        "public.json",
        include_str!("../../../examples/policies/public.json"),
    ),
    (
        "cross-account.json",
        include_str!("../../../examples/policies/cross-account.json"),
    ),
    (
        "aws-managed-ebs.json",
        include_str!("../../../examples/policies/aws-managed-ebs.json"),
    ),
    (
        "large.json",
        include_str!("../../../examples/policies/large.json"),
    ),
];

/// Checks the contract on `text`; returns whether the fast reader answered.
#[track_caller]
fn agrees(text: &str) -> bool {
    let fast = PolicyView::parse(text);
    match Policy::parse(text) {
        Ok(policy) => {
            if let Some(fast) = &fast {
                assert_eq!(fast, &PolicyView::of(&policy), "{text}");
            }
        }
        Err(err) => assert!(
            fast.is_none(),
            "the fast reader accepted a document the lossless parser rejects ({err}): {text}"
        ),
    }
    fast.is_some()
}

fn statement(fields: &str) -> String {
    format!(r#"{{"Version":"2012-10-17","Statement":[{{{fields}}}]}}"#)
}

const BASE: &str = r#""Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*""#;

#[test]
fn reads_every_example_like_the_lossless_parser() {
    for (name, text) in EXAMPLES {
        assert!(agrees(text), "{name} should take the fast path");
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert!(agrees(&value.to_string()), "{name}, compact");
    }
}

#[test]
fn evaluation_agrees_on_every_example() {
    let trusted = ["444455556666".to_string()];
    for (name, text) in EXAMPLES {
        for key_manager in [KeyManager::Customer, KeyManager::Aws] {
            for trusted_accounts in [&[][..], &trusted[..]] {
                let ctx = EvalContext {
                    account_id: "111122223333",
                    key_manager,
                    trusted_accounts,
                };
                let slow = evaluate_policy(&Policy::parse(text).unwrap(), &ctx);
                assert_eq!(evaluate(text, &ctx), slow, "{name}");
            }
        }
    }
}

/// Documents one character away from an example: broken JSON, broken grammar, renamed fields,
/// changed values. The reader may give up on any of them, but never disagree. Edits are made to
/// the compact form, at punctuation and at the start of each word, where they change structure.
#[test]
fn agrees_on_one_character_edits_of_the_examples() {
    for (name, text) in EXAMPLES {
        let text = serde_json::from_str::<serde_json::Value>(text)
            .unwrap()
            .to_string();
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut answered = 0;
        for (n, &(i, c)) in chars.iter().enumerate() {
            let word_start = n == 0 || !chars[n - 1].1.is_alphanumeric();
            if c.is_alphanumeric() && !word_start {
                continue;
            }
            let next = chars.get(n + 1).map_or(text.len(), |&(j, _)| j);
            let deleted = format!("{}{}", &text[..i], &text[next..]);
            let doubled = format!("{}{}", &text[..next], &text[i..]);
            answered += usize::from(agrees(&deleted)) + usize::from(agrees(&doubled));
        }
        assert!(answered > 0, "{name}: the fast path never answered");
    }
}

#[test]
fn agrees_on_unusual_but_valid_shapes() {
    let cases = [
        // a single statement object; escapes in keys and values; unknown fields of every type
        format!(r#"{{"Statement":{{{BASE}}}}}"#),
        r#"{"St\u0061tement":[{"Eff\u0065ct":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:r\u006ft"},"Action":"kms:\u002a","Resource":"*","Sid":"\ud83d\ude00"}]}"#.to_string(),
        statement(&format!(r#"{BASE},"X":{{"a":[1,-2,3.5e10,true,null,{{}}]}},"Y":null"#)),
        format!(r#"{{"Statement":[{{{BASE}}}],"Zeta":[1e300,-0,0.1,"\n"]}}"#),
        // Sid of other types, empty Sid
        statement(&format!(r#"{BASE},"Sid":7"#)),
        statement(&format!(r#"{BASE},"Sid":["a"]"#)),
        statement(&format!(r#"{BASE},"Sid":{{"a":1}}"#)),
        statement(&format!(r#"{BASE},"Sid":"""#)),
        // principals: several families, empty lists, NotPrincipal
        statement(
            r#""Effect":"Allow","Principal":{"Service":["a","b"],"AWS":[],"Federated":"f","CanonicalUser":"c"},"NotAction":"kms:Decrypt","Resource":"*""#,
        ),
        statement(r#""Effect":"Deny","NotPrincipal":"*","Action":["kms:Put*","*"],"NotResource":1"#),
        // no resource; resource of any type
        statement(r#""Effect":"Allow","Principal":"*","Action":"kms:Decrypt""#),
        statement(r#""Effect":"Allow","Principal":"*","Action":"kms:Decrypt","Resource":{"a":[1]}"#),
        // condition values: numbers, booleans, arrays, empty arrays, escapes; operator case
        statement(&format!(
            r#"{BASE},"Condition":{{"forAnyValue:stringEQUALSIfExists":{{"AWS:PrincipalType":["Account",true,12,-3,1.50,1e2]}},"Bool":{{"kms:GrantIsForAWSResource":false}},"NumericLessThan":{{"x":300}},"StringLike":{{"aws:PrincipalArn":[],"k":"v\"w"}},"Null":{{}}}}"#
        )),
        statement(&format!(r#"{BASE},"Condition":{{}}"#)),
        // a key that differs only in case is a different key
        statement(&format!(
            r#"{BASE},"Condition":{{"StringEquals":{{"aws:PrincipalType":"Account"}},"stringequals":{{"aws:principaltype":"User"}}}}"#
        )),
        // big numbers become floats, as in `Value`
        statement(&format!(
            r#"{BASE},"Condition":{{"StringEquals":{{"kms:CallerAccount":[111122223333,18446744073709551616,-9223372036854775809]}}}}"#
        )),
    ];
    for text in &cases {
        assert!(agrees(text), "should take the fast path: {text}");
    }
}

#[test]
fn leaves_what_it_does_not_mirror_to_the_lossless_parser() {
    let cases = [
        // duplicate keys: `Value` keeps the last one
        format!(r#"{{"Statement":[{{{BASE}}}],"Statement":{{{BASE}}}}}"#),
        statement(&format!(r#"{BASE},"Effect":"Deny""#)),
        statement(&format!(r#"{BASE},"Sid":"a","Sid":"b""#)),
        statement(
            r#""Effect":"Allow","Principal":{"AWS":"a","AWS":"b"},"Action":"kms:*","Resource":"*""#,
        ),
        statement(&format!(
            r#"{BASE},"Condition":{{"StringEquals":{{"a":"1"}},"StringEquals":{{"b":"2"}}}}"#
        )),
        statement(&format!(
            r#"{BASE},"Condition":{{"StringEquals":{{"a":"1","a":"2"}}}}"#
        )),
        // condition values that are not scalars
        statement(&format!(r#"{BASE},"Condition":{{"Null":{{"a":null}}}}"#)),
        statement(&format!(r#"{BASE},"Condition":{{"StringEquals":{{"a":["x",null]}}}}"#)),
        statement(&format!(r#"{BASE},"Condition":{{"StringEquals":{{"a":["x",[1]]}}}}"#)),
        statement(&format!(r#"{BASE},"Condition":{{"StringEquals":{{"a":{{"b":1}}}}}}"#)),
        // serde_json's private tokens, which `Value` reads specially
        r#"{"$serde_json::private::RawValue":"{\"Statement\":{\"Effect\":\"Allow\",\"Principal\":\"*\",\"Action\":\"kms:*\",\"Resource\":\"*\"}}"}"#.to_string(),
        format!(r#"{{"Statement":[{{{BASE}}}],"X":{{"$serde_json::private::RawValue":"1"}}}}"#),
        format!(r#"{{"Statement":[{{{BASE}}}],"X":{{"$serde_json::private::RawValue":"not json"}}}}"#),
        // invalid documents of every kind
        "{".to_string(),
        "[]".to_string(),
        format!(r#"{{"Statement":[{{{BASE}}}]}} x"#),
        format!(r#"{{"Statement":[{{{BASE}}}],"X":1e400}}"#),
        format!(r#"{{"Statement":[{{{BASE}}}],"X":"\ud800"}}"#),
        r#"{"Statement":[]}"#.to_string(),
        r#"{"Statement":[1]}"#.to_string(),
        statement(r#""Effect":"allow","Principal":"*","Action":"kms:*""#),
        statement(r#""Effect":"Allow","Principal":"arn:aws:iam::1:root","Action":"kms:*""#),
        statement(r#""Effect":"Allow","Principal":{},"Action":"kms:*""#),
        statement(r#""Effect":"Allow","Principal":{"Aws":"*"},"Action":"kms:*""#),
        statement(r#""Effect":"Allow","Principal":{"AWS":["a",2]},"Action":"kms:*""#),
        statement(r#""Effect":"Allow","Principal":"*","NotPrincipal":"*","Action":"kms:*""#),
        statement(r#""Effect":"Allow","Principal":"*","Action":[]"#),
        statement(r#""Effect":"Allow","Principal":"*","Action":"kms:*","NotAction":"kms:*""#),
        statement(r#""Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*","NotResource":"*""#),
        statement(r#""Effect":"Allow","Principal":"*","Action":"kms:*","Condition":[]"#),
        statement(r#""Effect":"Allow","Principal":"*","Action":"kms:*","Condition":{"StringEquals":"x"}"#),
        format!("{}{}", "[".repeat(200), "]".repeat(200)),
        format!(
            r#"{{"Statement":[{{{BASE}}}],"X":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        ),
    ];
    for text in &cases {
        assert!(
            !agrees(text),
            "should be left to the lossless parser: {text}"
        );
    }
    let ctx = EvalContext {
        account_id: "111122223333",
        key_manager: KeyManager::Customer,
        trusted_accounts: &[],
    };
    for text in &cases {
        let slow = match Policy::parse(text) {
            Ok(policy) => evaluate_policy(&policy, &ctx),
            Err(_) => continue,
        };
        assert_eq!(evaluate(text, &ctx), slow, "{text}");
    }
}
