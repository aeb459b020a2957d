//! Golden 01: GLIP's tokenization and positive maps for four prompts, exactly.

use glip_rt::testing::{load_golden, testdata};
use glip_rt::tokenizer::{
    chunk_by_count, chunk_to_fit, GlipTokenizer, Prompt, PromptPath, MAX_QUERY_LEN,
};
use serde_json::Value;

fn meta() -> Value {
    let s = std::fs::read_to_string(testdata().join("golden/01_tokenizer.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn ints(t: &glip_rt::Tensor) -> Vec<i64> {
    match t.dtype() {
        glip_rt::DType::U8 => t.u8s().unwrap().iter().map(|&x| x as i64).collect(),
        _ => t.i32s().unwrap().iter().map(|&x| x as i64).collect(),
    }
}

fn prompt_for(name: &str, p: &Value) -> Prompt {
    let caption = p["caption"].as_str().unwrap();
    let spans: Vec<(usize, usize)> = p["tokens_positive"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let s = &s[0];
            (
                s[0].as_u64().unwrap() as usize,
                s[1].as_u64().unwrap() as usize,
            )
        })
        .collect();
    match p["path"].as_str().unwrap() {
        "eval" => {
            let names: Vec<&str> = p["label_names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let pr = Prompt::from_class_names(&names).unwrap();
            assert_eq!(pr.caption, caption, "{name}: caption");
            let want_labels: Vec<u32> = p["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(pr.labels(), want_labels, "{name}: labels");
            let got_spans: Vec<(usize, usize)> = pr.phrases.iter().map(|ph| ph.spans[0]).collect();
            assert_eq!(got_spans, spans, "{name}: spans");
            pr
        }
        _ => {
            let phrases: Vec<&str> = p["phrases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let with: Vec<(&str, (usize, usize))> =
                phrases.iter().copied().zip(spans.iter().copied()).collect();
            let pr = Prompt::with_spans(caption, &with).unwrap();
            // The phrase-text and parser constructors must find the same spans.
            let by_text = Prompt::with_phrases(caption, &phrases).unwrap();
            assert_eq!(by_text.phrases, pr.phrases, "{name}: with_phrases");
            if name == "three" {
                let parsed = Prompt::parse(caption).unwrap();
                assert_eq!(parsed.phrases, pr.phrases, "{name}: parse");
                assert_eq!(parsed.caption, caption);
            }
            pr
        }
    }
}

#[test]
fn golden_tokenizer_all_prompts() {
    let g = load_golden("01_tokenizer").unwrap();
    let m = meta();
    let tok = GlipTokenizer::bert_base_uncased().unwrap();
    for name in ["coco80", "free", "three", "long"] {
        let p = &m["prompts"][name];
        let pr = prompt_for(name, p);
        let e = tok.encode(&pr).unwrap();
        let want = |k: &str| ints(&g[&format!("{name}/{k}")]);
        let as64 = |v: &[u32]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        assert_eq!(as64(&e.input_ids), want("input_ids"), "{name}: input_ids");
        assert_eq!(
            as64(&e.attention_mask),
            want("attention_mask"),
            "{name}: attention_mask"
        );
        assert_eq!(
            as64(&e.special_tokens_mask),
            want("special_tokens_mask"),
            "{name}: special_tokens_mask"
        );
        assert_eq!(
            as64(&e.untruncated_ids),
            want("untruncated_input_ids"),
            "{name}: untruncated ids"
        );
        let bin: Vec<i64> = e.positive_map_binary().iter().map(|&x| x as i64).collect();
        assert_eq!(
            bin,
            want("positive_map_binary"),
            "{name}: positive_map_binary"
        );
        assert_eq!(
            e.num_real,
            p["num_real_tokens_model_side"].as_u64().unwrap() as usize,
            "{name}: L_r"
        );
        assert_eq!(e.real_ids().len(), e.num_real);
        assert_eq!(e.truncated(), name == "long");
        // Tokens and offsets.
        let toks: Vec<&str> = p["tokens_untruncated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(e.tokens, toks, "{name}: tokens");
        let offs: Vec<(usize, usize)> = p["offset_mapping_untruncated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o[0].as_u64().unwrap() as usize,
                    o[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert_eq!(e.offsets, offs, "{name}: offsets");
        // GLIP's label → token dict.
        let dict = p["positive_map_label_to_token"].as_object().unwrap();
        assert_eq!(dict.len(), e.num_labels(), "{name}: dict size");
        for (ph, toks) in pr.phrases.iter().zip(&e.label_to_tokens) {
            let w: Vec<usize> = dict[&ph.label.to_string()]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(toks, &w, "{name}: label {} tokens", ph.label);
        }
        if let Some(norm) = g.get(&format!("{name}/positive_map_normalized")) {
            let want = norm.f32s().unwrap();
            let got = e.positive_map_normalized();
            assert_eq!(got.len(), want.len());
            let md = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(md <= 1e-7, "{name}: normalized map max diff {md}");
            println!("{name}: normalized map max |diff| = {md:e}");
        }
        if name == "long" {
            let beyond = p["labels_beyond_256"].as_object().unwrap();
            let mut want_lost: Vec<u32> = Vec::new();
            for (k, v) in beyond {
                if v.as_array()
                    .unwrap()
                    .iter()
                    .all(|t| t.as_u64().unwrap() as usize >= MAX_QUERY_LEN)
                {
                    want_lost.push(k.parse().unwrap());
                }
            }
            want_lost.sort_unstable();
            assert_eq!(e.labels_without_tokens(), want_lost);
        }
        println!(
            "{name}: {} labels, L = {}, L_r = {} — exact",
            e.num_labels(),
            e.untruncated_ids.len(),
            e.num_real
        );
    }
}

#[test]
fn chunks_cover_long_label_set() {
    let m = meta();
    let names: Vec<String> = m["prompts"]["long"]["label_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let tok = GlipTokenizer::bert_base_uncased().unwrap();

    // GLIP's fixed-count chunks: the first chunk of 80 is exactly the coco80 prompt.
    let c = chunk_by_count(&names, 80).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(
        c[0].caption,
        m["prompts"]["coco80"]["caption"].as_str().unwrap()
    );
    assert_eq!(c[1].phrases[0].label, 81);
    assert_eq!(c[1].phrases[0].spans[0], (0, names[80].len()));

    let c = chunk_to_fit(&tok, &names, MAX_QUERY_LEN).unwrap();
    assert!(c.len() >= 2);
    let mut all = Vec::new();
    for ch in &c {
        assert_eq!(ch.path, PromptPath::Eval);
        let e = tok.encode(ch).unwrap();
        assert!(!e.truncated() && e.untruncated_ids.len() <= MAX_QUERY_LEN);
        assert!(e.labels_without_tokens().is_empty());
        // Each chunk's map equals the map of the same names encoded alone with the global ids.
        all.extend(ch.labels());
    }
    assert_eq!(all, (1..=names.len() as u32).collect::<Vec<_>>());
    // Chunk boundaries are maximal: adding the next name would overflow.
    for w in c.windows(2) {
        let mut n: Vec<&str> = w[0].names();
        n.push(&w[1].phrases[0].name);
        let p = Prompt::from_class_names(&n).unwrap();
        assert!(tok.count_tokens(&p.caption).unwrap() > MAX_QUERY_LEN);
    }
    println!(
        "chunk_to_fit: {} names → {} chunks of {:?} labels",
        names.len(),
        c.len(),
        c.iter().map(|x| x.phrases.len()).collect::<Vec<_>>()
    );
}

#[test]
fn clean_name_quirks() {
    use glip_rt::tokenizer::clean_name;
    assert_eq!(clean_name("traffic_light"), "traffic light");
    assert_eq!(clean_name("bow (weapon)"), "bow ");
    assert_eq!(clean_name("a (b) c (d)"), "a ");
    assert_eq!(clean_name("a__b"), "a b");
    assert_eq!(clean_name("a___b"), "a  b");
}

#[test]
fn prompt_errors() {
    assert!(Prompt::parse("").is_err());
    assert!(Prompt::parse("  . . ").is_err());
    assert!(Prompt::with_phrases("a dog", &["cat"]).is_err());
    assert!(Prompt::with_spans("a dog", &[("dog", (2, 9))]).is_err());
    let p = Prompt::parse("person. bicycle. traffic light.").unwrap();
    assert_eq!(p.names(), vec!["person", "bicycle", "traffic light"]);
    assert_eq!(p.phrases[2].spans[0], (17, 30));
    let p = Prompt::with_phrases("A Dog on the sofa", &["dog"]).unwrap();
    assert_eq!(p.phrases[0].spans[0], (2, 5));
    // Char (not byte) offsets.
    let p = Prompt::parse("café. naïve dog").unwrap();
    assert_eq!(p.phrases[1].spans[0], (6, 15));
    let e = glip_rt::tokenizer::GlipTokenizer::bert_base_uncased()
        .unwrap()
        .encode(&p)
        .unwrap();
    assert_eq!(e.label_to_tokens[0], vec![1]);
}

#[test]
fn demo_class_list_mode() {
    let p = Prompt::demo_class_list(&["person", "traffic light"]).unwrap();
    assert_eq!(p.caption, "person . traffic light . ");
    assert_eq!(p.phrases[1].spans[0], (9, 22));
    let e = GlipTokenizer::bert_base_uncased()
        .unwrap()
        .encode(&p)
        .unwrap();
    assert_eq!(e.label_to_tokens, vec![vec![1], vec![3, 4]]);
    assert!(Prompt::demo_class_list::<&str>(&[]).is_err());
    assert!(Prompt::demo_class_list(&[""]).is_err());
}
