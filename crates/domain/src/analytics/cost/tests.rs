//! Table tests of the cost engine over hand-computed cases. Every expected cost is
//! worked out in the comment beside it (rates are USD per 1M tokens).

use std::collections::HashMap;

use super::*;
use crate::analytics::analytics_model;
use crate::analytics::query::RawEvent;
use crate::event::Decoded;
use crate::prices::{ContextTier, ModelPrice, Rate, Rates, ServiceTierRule};

fn rates(prompt: f64, completion: f64) -> Rates {
    Rates {
        prompt: Rate::set(prompt),
        completion: Rate::set(completion),
        ..Rates::default()
    }
}

fn book(entries: Vec<(&str, ModelPrice)>) -> PriceBook {
    PriceBook::new(
        entries
            .into_iter()
            .map(|(key, price)| (key.to_string(), price))
            .collect::<HashMap<_, _>>(),
    )
}

fn tokens(input: i64, cached: i64, read: i64, creation: i64, output: i64) -> Metrics {
    Metrics {
        calls: 1,
        input,
        cached,
        cache_read: read,
        cache_creation: creation,
        output,
        ..Metrics::default()
    }
}

/// One case: (billing model, analytics model, service tier, normalized input for
/// the band) priced under `book`.
struct Case<'a> {
    name: &'a str,
    billing: &'a str,
    model: &'a str,
    tier: &'a str,
    sums: Metrics,
    expected: Option<f64>,
}

fn check(book: &PriceBook, cases: &[Case<'_>]) {
    for case in cases {
        let band = Band {
            model: case.model,
            billing_model: case.billing,
            service_tier: case.tier,
            context_band: context_band(case.sums.input),
        };
        let got = book.band_cost(band, &case.sums);
        match (got, case.expected) {
            (Some(got), Some(expected)) => assert!(
                (got - expected).abs() <= expected.abs() * 1e-12,
                "{}: got {got}, expected {expected}",
                case.name
            ),
            (got, expected) => assert_eq!(got, expected, "{}", case.name),
        }
        // The explained cost is the same number.
        if let Some(quote) = book.quote(band, &case.sums) {
            assert_eq!(Some(quote.cost), got, "{}: quote", case.name);
        }
    }
}

fn case<'a>(
    name: &'a str,
    model: &'a str,
    tier: &'a str,
    sums: Metrics,
    expected: Option<f64>,
) -> Case<'a> {
    Case {
        name,
        billing: model,
        model,
        tier,
        sums,
        expected,
    }
}

/// The metrics storage keeps for one decoded CPA payload.
fn metrics_of_payload(payload: &str) -> Metrics {
    let Decoded::Event(event) = crate::decode::decode(payload.as_bytes(), 1) else {
        panic!("not an event: {payload}");
    };
    let raw = RawEvent {
        tokens: event.tokens,
        normalized_total_input: event.cache_input_mode.map(|_| event.normalized.total_input),
        ..RawEvent::default()
    };
    raw.metrics()
}

#[test]
fn base_rates_and_cache_fallbacks() {
    let gpt5 = ModelPrice::with_rates(Rates {
        prompt: Rate::set(1.25),
        completion: Rate::set(10.0),
        cache: Rate::set(0.125),
        cache_read: Rate::set(0.125),
        cache_creation: Rate::default(),
    });
    let plain = ModelPrice::with_rates(rates(2.0, 8.0));
    let free_reads = ModelPrice::with_rates(Rates {
        cache_read: Rate::set(0.0),
        ..rates(2.0, 8.0)
    });
    let book = book(vec![
        ("gpt-5", gpt5),
        ("plain", plain),
        ("free-reads", free_reads),
    ]);
    check(
        &book,
        &[
            // (600·1.25 + 400·0.125 + 200·10) / 1e6 = 0.0028 (the analytics spec's example).
            case(
                "worked example",
                "gpt-5",
                "",
                tokens(1000, 400, 0, 0, 200),
                Some(0.0028),
            ),
            // Cache write without a cacheCreation rate is billed at the prompt rate:
            // (800·2 + 200·2) / 1e6.
            case(
                "cache write falls back to prompt",
                "plain",
                "",
                tokens(1000, 0, 0, 200, 0),
                Some(0.002),
            ),
            // Cache read without cacheRead and cache rates: 10 % of prompt:
            // (500·2 + 500·0.2) / 1e6.
            case(
                "cache read falls back to 10 %",
                "plain",
                "",
                tokens(1000, 0, 500, 0, 0),
                Some(0.0011),
            ),
            // An explicit cacheRead of 0 stays 0: 500·2 / 1e6.
            case(
                "explicit zero cache read",
                "free-reads",
                "",
                tokens(1000, 0, 500, 0, 0),
                Some(0.001),
            ),
            // Compat cached tokens use `cache` with no fallback: cache = 0 makes them
            // free, and they still leave the prompt part: 600·2 / 1e6.
            case(
                "compat cached at cache rate 0",
                "plain",
                "",
                tokens(1000, 400, 0, 0, 0),
                Some(0.0012),
            ),
            // More cache than input never makes the prompt part negative:
            // 0·2 + 500·0.2 / 1e6.
            case(
                "prompt part clamps at 0",
                "plain",
                "",
                tokens(300, 0, 500, 0, 0),
                Some(0.0001),
            ),
        ],
    );
}

#[test]
fn cached_input_included_and_separate_are_billed_once() {
    let book = book(vec![
        (
            "gpt-5",
            ModelPrice::with_rates(Rates {
                prompt: Rate::set(1.25),
                completion: Rate::set(10.0),
                cache: Rate::set(0.125),
                cache_read: Rate::set(0.125),
                cache_creation: Rate::default(),
            }),
        ),
        (
            "claude-sonnet-4-5",
            ModelPrice::with_rates(Rates {
                prompt: Rate::set(3.0),
                completion: Rate::set(15.0),
                cache: Rate::default(),
                cache_read: Rate::set(0.3),
                cache_creation: Rate::set(3.75),
            }),
        ),
    ]);
    // OpenAI counts cached tokens inside input_tokens ("included"): I = 1000 of
    // which 400 cached → (600·1.25 + 400·0.125 + 200·10) / 1e6 = 0.0028.
    let included = metrics_of_payload(
        r#"{"timestamp":"2026-01-01T00:00:00Z","provider":"openai","executor_type":"OpenAIExecutor","model":"gpt-5",
            "tokens":{"input_tokens":1000,"output_tokens":200,"cached_tokens":400,"total_tokens":1200}}"#,
    );
    assert_eq!(included.input, 1000);
    // Anthropic reports cache reads and writes beside input_tokens ("separate"):
    // I = 600 + 400 + 100 = 1100, prompt part 600 →
    // (600·3 + 400·0.3 + 100·3.75 + 200·15) / 1e6 = 0.005295.
    let separate = metrics_of_payload(
        r#"{"timestamp":"2026-01-01T00:00:00Z","provider":"claude","executor_type":"ClaudeExecutor","model":"claude-sonnet-4-5",
            "tokens":{"input_tokens":600,"output_tokens":200,"cache_read_input_tokens":400,"cache_creation_input_tokens":100}}"#,
    );
    assert_eq!(separate.input, 1100);
    check(
        &book,
        &[
            case("included", "gpt-5", "", included, Some(0.0028)),
            case(
                "separate",
                "claude-sonnet-4-5",
                "",
                separate,
                Some(0.005295),
            ),
        ],
    );
}

#[test]
fn context_tiers_apply_strictly_above_their_threshold() {
    let tiered = ModelPrice {
        rates: rates(1.25, 10.0),
        context_tiers: vec![ContextTier {
            threshold_tokens: 200_000,
            rates: rates(2.5, 15.0),
        }],
        ..ModelPrice::default()
    };
    let odd = ModelPrice {
        rates: rates(1.0, 1.0),
        context_tiers: vec![ContextTier {
            threshold_tokens: 100_000,
            rates: rates(2.0, 2.0),
        }],
        ..ModelPrice::default()
    };
    let book = book(vec![("gemini-2.5-pro", tiered), ("odd", odd)]);
    check(
        &book,
        &[
            // Exactly at the threshold stays in the lower band:
            // (200000·1.25 + 1000·10) / 1e6 = 0.26.
            case(
                "at 200k: base",
                "gemini-2.5-pro",
                "",
                tokens(200_000, 0, 0, 0, 1000),
                Some(0.26),
            ),
            // One token above: the tier prices the whole request:
            // (200001·2.5 + 1000·15) / 1e6 = 0.5150025.
            case(
                "above 200k: tier",
                "gemini-2.5-pro",
                "",
                tokens(200_001, 0, 0, 0, 1000),
                Some(0.5150025),
            ),
            // A context tier is not stacked with a priority multiplier.
            case(
                "tier ignores priority",
                "gemini-2.5-pro",
                "priority",
                tokens(200_001, 0, 0, 0, 1000),
                Some(0.5150025),
            ),
            // 150k lies above the 100k threshold and in a band (128k, 200k] wholly above it:
            // (150000·2 + 0) / 1e6 = 0.3.
            case(
                "off-bound tier, whole band above",
                "odd",
                "",
                tokens(150_000, 0, 0, 0, 0),
                Some(0.3),
            ),
        ],
    );
    // 120k lies in (32k, 128k], which the 100k threshold cuts: priced at base, flagged.
    let band = Band {
        model: "odd",
        billing_model: "odd",
        service_tier: "",
        context_band: context_band(120_000),
    };
    let quote = book
        .quote(band, &tokens(120_000, 0, 0, 0, 0))
        .expect("priced");
    assert!(quote.approximate);
    assert_eq!(quote.rule, PriceRule::Base);
    let exact = Band {
        context_band: context_band(250_000),
        ..band
    };
    let quote = book
        .quote(exact, &tokens(250_000, 0, 0, 0, 0))
        .expect("priced");
    assert!(!quote.approximate);
    assert_eq!(
        quote.rule,
        PriceRule::ContextTier {
            threshold_tokens: 100_000
        }
    );
}

#[test]
fn service_tiers_priority_and_flex() {
    let with_fast = ModelPrice {
        rates: rates(1.0, 4.0),
        service_tiers: vec![ServiceTierRule {
            mode: "fast".into(),
            service_tier: "priority".into(),
            rates: Rates {
                prompt: Rate::set(2.5),
                ..Rates::default()
            },
        }],
        ..ModelPrice::default()
    };
    let book = book(vec![
        ("with-fast", with_fast),
        ("gpt-5.5", ModelPrice::with_rates(rates(5.0, 40.0))),
        ("gpt-4o", ModelPrice::with_rates(rates(2.5, 10.0))),
        ("gpt-5.4", ModelPrice::with_rates(rates(2.0, 12.0))),
    ]);
    let sums = tokens(1000, 0, 0, 0, 100);
    check(
        &book,
        &[
            // Explicit rule for "priority": prompt 2.5, completion inherited 4:
            // (1000·2.5 + 100·4) / 1e6.
            case("priority rule", "with-fast", "priority", sums, Some(0.0029)),
            case(
                "fast matches the same rule",
                "with-fast",
                " FAST ",
                sums,
                Some(0.0029),
            ),
            // No rule: gpt-5.5 priority ×2.5 → (1000·5 + 100·40)·2.5 / 1e6.
            case(
                "gpt-5.5 priority multiplier",
                "gpt-5.5",
                "priority",
                sums,
                Some(0.0225),
            ),
            // Other models pay list price for priority: (1000·2.5 + 100·10) / 1e6.
            case(
                "priority elsewhere ×1",
                "gpt-4o",
                "priority",
                sums,
                Some(0.0035),
            ),
            // Flex and batch are half price for every model.
            case("flex half price", "gpt-4o", "flex", sums, Some(0.00175)),
            case("batch half price", "gpt-4o", "batch", sums, Some(0.00175)),
            case("default tier", "gpt-4o", "default", sums, Some(0.0035)),
            // Legacy long-context premium (gpt-5.4, no tiers, input > 272k):
            // (300000·2·2 + 1000·12·1.5) / 1e6 = 1.218.
            case(
                "long-context premium",
                "gpt-5.4",
                "",
                tokens(300_000, 0, 0, 0, 1000),
                Some(1.218),
            ),
            // Priority long context: the premium on base rates only, no ×2.
            case(
                "premium with priority",
                "gpt-5.4",
                "priority",
                tokens(300_000, 0, 0, 0, 1000),
                Some(1.218),
            ),
            // Flex long context: premium × 0.5.
            case(
                "premium with flex",
                "gpt-5.4",
                "flex",
                tokens(300_000, 0, 0, 0, 1000),
                Some(0.609),
            ),
            // Short gpt-5.4 priority: ×2 → (1000·2 + 100·12)·2 / 1e6.
            case(
                "gpt-5.4 priority short",
                "gpt-5.4",
                "priority",
                sums,
                Some(0.0064),
            ),
        ],
    );
}

#[test]
fn price_lookup_by_alias_suffix_and_provider_and_unpriced_models() {
    let book = book(vec![
        ("my-alias", ModelPrice::with_rates(rates(1.0, 2.0))),
        ("gpt-5", ModelPrice::with_rates(rates(1.25, 10.0))),
        ("a/shared", ModelPrice::with_rates(rates(1.0, 1.0))),
        ("b/shared", ModelPrice::with_rates(rates(2.0, 2.0))),
        ("Mixed-Case", ModelPrice::with_rates(rates(3.0, 3.0))),
    ]);
    let sums = tokens(1_000_000, 0, 0, 0, 1_000_000);
    let suffixed = analytics_model("gpt-5(high)");
    assert_eq!(suffixed, "gpt-5");
    check(
        &book,
        &[
            // Resolved model unpriced, requested alias priced: 1 + 2.
            Case {
                name: "alias only",
                billing: "gpt-5-2025-08-07-internal",
                model: "my-alias",
                tier: "",
                sums,
                expected: Some(3.0),
            },
            // `gpt-5(high)` is analysed and priced as gpt-5: 1.25 + 10.
            case("reasoning suffix", suffixed, "", sums, Some(11.25)),
            // Provider-prefixed name finds the plain key: 1.25 + 10.
            case("provider prefix", "openai/gpt-5", "", sums, Some(11.25)),
            case("case-insensitive", "mixed-case", "", sums, Some(6.0)),
            // `shared` could be a/shared or b/shared: not guessed.
            case("ambiguous provider-less name", "shared", "", sums, None),
            case("unpriced", "nobody-priced-me", "", sums, None),
            // No tokens, nothing to price: 0 even without a price.
            case(
                "no tokens",
                "nobody-priced-me",
                "",
                tokens(0, 0, 0, 0, 0),
                Some(0.0),
            ),
            // Reasoning is never billed on its own.
            case(
                "reasoning not billed",
                "gpt-5",
                "",
                Metrics {
                    reasoning: 5_000_000,
                    ..sums
                },
                Some(11.25),
            ),
        ],
    );
    let unpriced_band = Band {
        model: "nobody-priced-me",
        billing_model: "nobody-priced-me",
        service_tier: "",
        context_band: 16,
    };
    let priced_band = Band {
        model: "gpt-5",
        billing_model: "gpt-5",
        ..unpriced_band
    };
    let empty = Metrics::default();
    assert_eq!(
        book.unpriced([
            (unpriced_band, &sums),
            (priced_band, &sums),
            (
                Band {
                    billing_model: "zero-tokens",
                    ..unpriced_band
                },
                &empty
            ),
        ]),
        vec!["nobody-priced-me".to_string()]
    );
    let quote = book
        .quote(
            Band {
                model: "my-alias",
                billing_model: "internal",
                service_tier: "",
                context_band: 16,
            },
            &sums,
        )
        .expect("priced");
    assert_eq!(quote.matched_by, PriceMatch::AnalyticsModel);
    assert_eq!(quote.price_key, "my-alias");
    assert_eq!(quote.behaviour_model, "internal");
}

#[test]
fn gpt_5_6_family_prices_are_built_in_and_complete_partial_prices() {
    let book = book(vec![(
        "gpt-5.6-sol",
        ModelPrice::with_rates(Rates {
            completion: Rate::set(40.0),
            ..Rates::default()
        }),
    )]);
    check(
        &book,
        &[
            // No price stored: built-in terra 2.5/15 → (1000·2.5 + 100·15) / 1e6.
            case(
                "built-in terra",
                "gpt-5.6-terra",
                "",
                tokens(1000, 0, 0, 0, 100),
                Some(0.004),
            ),
            // Stored sol price with only completion: prompt 5 from the list, cache
            // read 0.1·5 → (500·5 + 500·0.5 + 100·40) / 1e6.
            case(
                "completed sol",
                "openai/gpt-5.6-sol",
                "",
                tokens(1000, 0, 500, 0, 100),
                Some(0.00675),
            ),
            // Priority doubles gpt-5.6: (1000·2.5 + 100·15)·2 / 1e6.
            case(
                "terra priority",
                "gpt-5.6-terra-2026",
                "priority",
                tokens(1000, 0, 0, 0, 100),
                Some(0.008),
            ),
        ],
    );
    // Plain gpt-5.6 has no list price.
    check(
        &book,
        &[case(
            "plain gpt-5.6",
            "gpt-5.6",
            "",
            tokens(1, 0, 0, 0, 0),
            None,
        )],
    );
}

#[test]
fn quotes_list_each_token_class() {
    let book = book(vec![(
        "gpt-5",
        ModelPrice::with_rates(Rates {
            prompt: Rate::set(1.25),
            completion: Rate::set(10.0),
            cache: Rate::set(0.125),
            cache_read: Rate::set(0.125),
            cache_creation: Rate::default(),
        }),
    )]);
    let band = Band {
        model: "gpt-5",
        billing_model: "gpt-5",
        service_tier: "flex",
        context_band: context_band(1000),
    };
    let quote = book
        .quote(band, &tokens(1000, 400, 0, 0, 200))
        .expect("priced");
    assert_eq!(quote.rule, PriceRule::Base);
    assert_eq!(quote.tier_multiplier, 0.5);
    let classes: Vec<_> = quote
        .lines
        .iter()
        .map(|line| (line.class, line.tokens, line.rate, line.multiplier))
        .collect();
    assert_eq!(
        classes,
        vec![
            ("prompt", 600, 1.25, 0.5),
            ("cached", 400, 0.125, 0.5),
            ("cache_read", 0, 0.125, 0.5),
            ("cache_creation", 0, 1.25, 0.5),
            ("output", 200, 10.0, 0.5),
        ]
    );
    let sum: f64 = quote.lines.iter().map(|line| line.cost).sum();
    assert!((sum - 0.0014).abs() < 1e-15);
    assert_eq!(quote.cost, 0.0014);
}

#[test]
fn bands_of_both_schemes_have_ranges() {
    assert_eq!(context_band(0), 16);
    assert_eq!(context_band(32_000), 16);
    assert_eq!(context_band(32_001), 17);
    assert_eq!(context_band(272_000), 20);
    assert_eq!(context_band(272_001), 21);
    assert_eq!(
        band_range(21),
        BandRange {
            floor: 272_000,
            ceiling: None
        }
    );
    assert_eq!(
        band_range(17),
        BandRange {
            floor: 32_000,
            ceiling: Some(128_000)
        }
    );
    // First-scheme ids written by older versions keep their meaning.
    assert_eq!(
        band_range(0),
        BandRange {
            floor: -1,
            ceiling: Some(128_000)
        }
    );
    assert_eq!(
        band_range(3),
        BandRange {
            floor: 272_000,
            ceiling: None
        }
    );
    let book = book(vec![("gpt-5.4", ModelPrice::with_rates(rates(2.0, 12.0)))]);
    let old_long = Band {
        model: "gpt-5.4",
        billing_model: "gpt-5.4",
        service_tier: "",
        context_band: 3,
    };
    let cost = book
        .band_cost(old_long, &tokens(300_000, 0, 0, 0, 1000))
        .expect("priced");
    assert!((cost - 1.218).abs() < 1e-12, "{cost}");
}
