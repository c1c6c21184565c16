//! What a backend's model list says about a model beyond its name, as Olla's unified
//! model pages show it: family and variant, parameter size, quantisation, context
//! length, type, state and inferred capabilities. Derived once per entry on the control
//! thread when a list is read (`control/discovery.rs`); the pages only print them and the
//! request path never looks at them.
//!
//! The sources, by list: Ollama's `/api/tags` entry `details` (`family`, `families`,
//! `parameter_size`, `quantization_level`, `format`) and `size`; LM Studio's
//! `/api/v0/models` entry (`arch`, `quantization`, `max_context_length`, `type`, `state`,
//! `publisher`, `compatibility_type`); vLLM's (and other OpenAI-compatible servers')
//! `/v1/models` entry (`max_model_len`, `owned_by`). The derivations follow Olla's unifier
//! (`internal/adapter/unifier`, its `config/models.yaml` tables) in a compact form:
//! a family a list reports wins verbatim, otherwise the name's leading known family (and
//! its version as the variant); quantisation names are normalised (`Q4_K_M` → `q4km`);
//! capabilities come from the type, name patterns and the context length.

use serde_json::Value;

/// Capability names, in the order pages list them; a model's are a bit set over these.
const CAPABILITIES: [&str; 20] = [
    "text-generation",
    "chat",
    "completion",
    "vision",
    "multimodal",
    "image-understanding",
    "embeddings",
    "similarity",
    "vector-search",
    "code-generation",
    "programming",
    "code-completion",
    "instruction-following",
    "reasoning",
    "logic",
    "mathematics",
    "problem-solving",
    "extended-context",
    "long-context",
    "ultra-long-context",
];

/// A set of [`CAPABILITIES`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Capabilities(u32);

impl Capabilities {
    fn add(&mut self, names: &[&str]) {
        for name in names {
            if let Some(i) = CAPABILITIES.iter().position(|c| c == name) {
                self.0 |= 1 << i;
            }
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(i) = CAPABILITIES.iter().position(|c| *c == name) {
            self.0 &= !(1 << i);
        }
    }

    pub(crate) fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    pub(crate) fn contains(self, name: &str) -> bool {
        CAPABILITIES
            .iter()
            .position(|c| *c == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    pub(crate) fn names(self) -> Vec<&'static str> {
        (0..CAPABILITIES.len())
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| CAPABILITIES[i])
            .collect()
    }
}

/// What one endpoint's list says about one model. Empty strings are unknowns (an empty
/// `Box<str>` allocates nothing).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Facts {
    pub(crate) family: Box<str>,
    pub(crate) variant: Box<str>,
    /// Normalised: "8b", "1.5b", "494m" (as the list gave it when it does not parse).
    pub(crate) parameter_size: Box<str>,
    pub(crate) parameter_count: u64,
    /// Normalised: "q4km", "q8", "f16".
    pub(crate) quantization: Box<str>,
    /// The weights' format: "gguf", "mlx", "safetensors".
    pub(crate) format: Box<str>,
    /// "llm", "vlm" or "embeddings", when the list says or the name shows it.
    pub(crate) kind: Box<str>,
    /// On this endpoint: "loaded", "not-loaded" (LM Studio), "available" (on disk, with a
    /// size), else "unknown".
    pub(crate) state: Box<str>,
    pub(crate) publisher: Box<str>,
    /// Tokens (LM Studio's `max_context_length`, vLLM's `max_model_len`).
    pub(crate) context_length: Option<u64>,
    /// Bytes on disk (Ollama's `size`).
    pub(crate) size: u64,
    pub(crate) capabilities: Capabilities,
}

impl Facts {
    /// The facts of list entry `raw` for model `name`.
    pub(crate) fn of(name: &str, raw: &Value) -> Facts {
        let details = &raw["details"];
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let given_family = text(&details["family"])
            .or_else(|| text(&details["families"][0]))
            .or_else(|| text(&raw["arch"]));
        // A family the list reports wins as it is, with no variant (as Olla does).
        let (family, variant) = match given_family {
            Some(f) => (f, String::new()),
            None => family_from_name(name),
        };
        let (parameter_size, parameter_count) = text(&details["parameter_size"])
            .map(|s| parameter_size(&s))
            .unwrap_or_default();
        let quantization = text(&details["quantization_level"])
            .or_else(|| text(&raw["quantization"]))
            .map(|q| normalize_quantization(&q))
            .unwrap_or_default();
        let format = text(&details["format"])
            .or_else(|| text(&raw["compatibility_type"]))
            .unwrap_or_default();
        let context_length = ["max_context_length", "max_model_len"]
            .iter()
            .find_map(|k| raw[k].as_u64())
            .filter(|&n| n > 0);
        let size = raw["size"].as_u64().unwrap_or(0);
        let lower = name.to_ascii_lowercase();
        let kind = match text(&raw["type"]).as_deref() {
            Some("embedding" | "embeddings") => "embeddings".to_string(),
            Some(t @ ("llm" | "vlm")) => t.to_string(),
            _ if lower.contains("embed") => "embeddings".to_string(),
            _ => String::new(),
        };
        let state = text(&raw["state"]).unwrap_or_else(|| {
            if raw["loaded"].as_bool() == Some(true) {
                "loaded".into()
            } else if size > 0 {
                "available".into()
            } else {
                "unknown".into()
            }
        });
        let publisher = text(&raw["publisher"])
            .or_else(|| text(&raw["owned_by"]))
            .unwrap_or_default();
        let capabilities = capabilities(&kind, &lower, context_length.unwrap_or(0));
        Facts {
            family: family.into(),
            variant: variant.into(),
            parameter_size: parameter_size.into(),
            parameter_count,
            quantization: quantization.into(),
            format: format.into(),
            kind: kind.into(),
            state: state.into(),
            publisher: publisher.into(),
            context_length,
            size,
            capabilities,
        }
    }
}

/// Families a name may start with, for names whose list reports none. A family matches
/// only up to a boundary (not followed by a letter): "phi4" is phi, "phind" is not. Listed
/// before any family that is a prefix of them ("gpt-oss" before "gpt").
const FAMILIES: [&str; 34] = [
    "gpt-oss",
    "command-r",
    "seed-oss",
    "codellama",
    "starcoder",
    "deepseek",
    "devstral",
    "magistral",
    "codestral",
    "ministral",
    "mistral",
    "mixtral",
    "nemotron",
    "hunyuan",
    "minimax",
    "internlm",
    "granite",
    "exaone",
    "smollm",
    "vicuna",
    "falcon",
    "llama",
    "gemma",
    "qwen",
    "olmo",
    "kimi",
    "forge",
    "bloom",
    "glm",
    "phi",
    "gpt",
    "mpt",
    "opt",
    "yi",
];

/// Names that keep their own family whole (Olla's `preserve_family`).
const PRESERVED: [&str; 3] = ["nomic-bert", "deepseek-coder-v2", "kimi"];

/// Family and variant from a model name: "llama3.1:8b" → ("llama", "3.1"),
/// "Qwen/Qwen2.5-7B-Instruct" → ("qwen", "2.5"), "deepseek-r1:8b" → ("deepseek", "r1").
pub(crate) fn family_from_name(name: &str) -> (String, String) {
    let lower = name.to_ascii_lowercase();
    // A publisher prefix ("meta-llama/...") is not part of the model's own name.
    let base = lower.rsplit('/').next().unwrap_or(&lower);
    let boundary = |rest: &str| !rest.starts_with(|c: char| c.is_ascii_alphabetic());
    let whole_token = |rest: &str| rest.is_empty() || rest.starts_with(['-', '_', ':', '.']);
    if let Some(p) = PRESERVED
        .iter()
        .find(|p| base.strip_prefix(**p).is_some_and(whole_token))
    {
        return (p.to_string(), String::new());
    }
    let leading = FAMILIES
        .iter()
        .find_map(|f| Some((*f, base.strip_prefix(f).filter(|r| boundary(r))?)));
    if let Some((family, rest)) = leading {
        return (family.to_string(), variant(rest));
    }
    // The first token starting with a known family ("llamafile" → llama).
    let first = base.split(['-', '_', ':']).next().unwrap_or(base);
    FAMILIES
        .iter()
        .find(|f| first.starts_with(**f))
        .map(|f| (f.to_string(), String::new()))
        .unwrap_or_default()
}

/// The variant after a family's name: its version number ("3.2" of "3.2:latest"), else
/// the next word of a hyphenated name ("r1" of "-r1:8b"). A `:` starts Ollama's tag,
/// which is a size or "latest", never a variant.
fn variant(rest: &str) -> String {
    let rest = rest.strip_prefix(['-', '_', '.']).unwrap_or(rest);
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let version = digits.trim_end_matches('.');
    if !version.is_empty() {
        return version.to_string();
    }
    if !rest.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return String::new();
    }
    rest.split(['-', '_', ':', '.'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Normalises a parameter size as Olla does: "8.0B" → "8b", "494.03M" → "494m",
/// "1500M" → "1.5b"; with the count. Text that is not a size is kept as it is.
pub(crate) fn parameter_size(text: &str) -> (String, u64) {
    let t = text.trim().to_ascii_uppercase();
    let (number, unit) = match t.strip_suffix('B') {
        Some(n) => (n.trim_end(), 'B'),
        None => match t.strip_suffix('M') {
            Some(n) => (n.trim_end(), 'M'),
            None => (t.as_str(), 'B'),
        },
    };
    let valid = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.matches('.').count() <= 1
        && !number.starts_with('.')
        && !number.ends_with('.');
    let Some(n) = number.parse::<f64>().ok().filter(|_| valid) else {
        return (text.to_string(), 0);
    };
    let billions = if unit == 'M' { n / 1000.0 } else { n };
    let count = (n * if unit == 'M' { 1e6 } else { 1e9 }).round() as u64;
    let shown = if billions >= 1.0 {
        format!("{billions:.1}b")
    } else {
        format!("{:.0}m", billions * 1000.0)
    };
    let shown = match shown.strip_suffix(".0b") {
        Some(whole) => format!("{whole}b"),
        None => shown,
    };
    (shown, count)
}

/// Quantisation names as Olla normalises them (its `quantization.mappings`), with its
/// fallbacks for other spellings: `q<n>_k_<m|s|l>` → `q<n>k<x>`, `q<n>_<m>`, `q<n>`,
/// `f<n>`/`fp<n>` → `f<n>`, `int<n>`; anything else lower-cased.
pub(crate) fn normalize_quantization(q: &str) -> String {
    const MAPPINGS: [(&str, &str); 30] = [
        ("Q4_K_M", "q4km"),
        ("Q4_K_S", "q4ks"),
        ("Q3_K_L", "q3kl"),
        ("Q3_K_M", "q3km"),
        ("Q3_K_S", "q3ks"),
        ("Q5_K_M", "q5km"),
        ("Q5_K_S", "q5ks"),
        ("Q6_K", "q6k"),
        ("Q2_K", "q2k"),
        ("Q4_0", "q4"),
        ("Q4_1", "q4_1"),
        ("Q5_0", "q5"),
        ("Q5_1", "q5_1"),
        ("Q8_0", "q8"),
        ("F16", "f16"),
        ("FP16", "f16"),
        ("F32", "f32"),
        ("FP32", "f32"),
        ("BF16", "bf16"),
        ("GPTQ_4BIT", "gptq4"),
        ("GPTQ-4BIT", "gptq4"),
        ("AWQ_4BIT", "awq4"),
        ("AWQ-4BIT", "awq4"),
        ("INT8", "int8"),
        ("INT4", "int4"),
        ("Q4_K_XL", "q4kxl"),
        ("MXFP4", "mxfp4"),
        ("NVFP4", "nvfp4"),
        ("Q8", "q8"),
        ("Q4", "q4"),
    ];
    let upper = q.trim().to_ascii_uppercase();
    if let Some((_, n)) = MAPPINGS.iter().find(|(k, _)| *k == upper) {
        return n.to_string();
    }
    let lower = upper.to_ascii_lowercase();
    quantization_pattern(lower.as_bytes()).unwrap_or(lower)
}

/// Olla's fallback patterns, each tried over the whole text before the next.
fn quantization_pattern(b: &[u8]) -> Option<String> {
    fn digits(b: &[u8], at: usize) -> &str {
        let n = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        std::str::from_utf8(&b[at..at + n]).unwrap_or_default()
    }
    let qs = || (0..b.len()).filter(|&i| b[i] == b'q');
    for i in qs() {
        let n = digits(b, i + 1);
        if let (false, [b'_', b'k', b'_', x @ (b'm' | b's' | b'l'), ..]) =
            (n.is_empty(), &b[i + 1 + n.len()..])
        {
            return Some(format!("q{n}k{}", char::from(*x)));
        }
    }
    for i in qs() {
        let n = digits(b, i + 1);
        let after = i + 1 + n.len();
        if !n.is_empty() && b.get(after) == Some(&b'_') {
            let m = digits(b, after + 1);
            if !m.is_empty() {
                return Some(format!("q{n}_{m}"));
            }
        }
    }
    for (prefix, out) in [("q", "q"), ("f", "f"), ("fp", "f"), ("int", "int")] {
        for i in 0..b.len() {
            if b[i..].starts_with(prefix.as_bytes()) {
                let n = digits(b, i + prefix.len());
                if !n.is_empty() {
                    return Some(format!("{out}{n}"));
                }
            }
        }
    }
    None
}

/// Capabilities from the model's type, its (lower-case) name and its context length, as
/// Olla infers them.
fn capabilities(kind: &str, lower: &str, context: u64) -> Capabilities {
    let mut caps = Capabilities::default();
    caps.add(&["text-generation"]);
    match kind {
        "llm" => caps.add(&["text-generation", "chat", "completion"]),
        "vlm" => caps.add(&[
            "text-generation",
            "vision",
            "multimodal",
            "image-understanding",
        ]),
        "embeddings" => {
            caps.add(&["embeddings", "similarity", "vector-search"]);
            // Embedding models encode text; they do not generate it.
            caps.remove("text-generation");
        }
        _ => {}
    }
    let patterns: [(&[&str], &[&str]); 5] = [
        (
            &["code", "coder", "codegen", "starcoder"],
            &["code-generation", "programming", "code-completion"],
        ),
        (
            &["instruct", "chat", "assistant"],
            &["instruction-following", "chat"],
        ),
        (&["reasoning", "think"], &["reasoning", "logic"]),
        (&["math", "mathstral"], &["mathematics", "problem-solving"]),
        (
            &["vision", "vlm", "llava", "bakllava"],
            &["vision", "multimodal", "image-understanding"],
        ),
    ];
    for (words, names) in patterns {
        if words.iter().any(|w| lower.contains(w)) {
            caps.add(names);
        }
    }
    match context {
        1_000_000.. => caps.add(&["ultra-long-context", "long-context"]),
        100_000.. => caps.add(&["long-context"]),
        32_000.. => caps.add(&["extended-context"]),
        _ => {}
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn families_come_from_the_list_else_from_the_name() {
        let cases = [
            ("llama3.1:8b", ("llama", "3.1")),
            ("llama3.2:latest", ("llama", "3.2")),
            ("Qwen/Qwen2.5-7B-Instruct", ("qwen", "2.5")),
            ("qwen2.5-coder:7b", ("qwen", "2.5")),
            ("meta-llama/Llama-3.1-8B-Instruct", ("llama", "3.1")),
            ("phi4:14b", ("phi", "4")),
            ("mistral:7b", ("mistral", "")),
            ("mistral-nemo:12b", ("mistral", "nemo")),
            ("deepseek-r1:8b", ("deepseek", "r1")),
            ("gpt-oss:20b", ("gpt-oss", "")),
            ("deepseek-coder-v2:16b", ("deepseek-coder-v2", "")),
            ("nomic-embed-text", ("", "")),
            ("phind-codellama", ("phi", "")),
            ("llamafile-x", ("llama", "")),
        ];
        for (name, (family, variant)) in cases {
            assert_eq!(
                family_from_name(name),
                (family.to_string(), variant.to_string()),
                "{name}"
            );
        }
        let ollama = json!({"name": "qwen2.5:7b", "size": 4_700_000_000u64,
            "details": {"family": "qwen2", "parameter_size": "7.6B", "quantization_level": "Q4_K_M", "format": "gguf"}});
        let f = Facts::of("qwen2.5:7b", &ollama);
        assert_eq!(
            (
                &*f.family,
                &*f.variant,
                &*f.parameter_size,
                &*f.quantization
            ),
            ("qwen2", "", "7.6b", "q4km")
        );
        assert_eq!(
            (&*f.format, &*f.state, f.size, f.context_length),
            ("gguf", "available", 4_700_000_000, None)
        );
        assert_eq!(f.parameter_count, 7_600_000_000);
        assert_eq!(f.capabilities.names(), ["text-generation"]);
    }

    #[test]
    fn lm_studio_and_vllm_entries() {
        let lm = json!({"id": "qwen2.5-7b-instruct", "object": "model", "type": "llm",
            "publisher": "lmstudio-community", "arch": "qwen2", "compatibility_type": "gguf",
            "quantization": "Q4_K_M", "state": "not-loaded", "max_context_length": 32768});
        let f = Facts::of("qwen2.5-7b-instruct", &lm);
        assert_eq!(
            (
                &*f.family,
                &*f.kind,
                &*f.state,
                &*f.quantization,
                f.context_length
            ),
            ("qwen2", "llm", "not-loaded", "q4km", Some(32768))
        );
        assert_eq!(&*f.publisher, "lmstudio-community");
        assert_eq!(
            f.capabilities.names(),
            [
                "text-generation",
                "chat",
                "completion",
                "instruction-following",
                "extended-context"
            ]
        );
        let embed = json!({"id": "text-embedding-nomic-embed-text-v1.5", "type": "embeddings"});
        let f = Facts::of("text-embedding-nomic-embed-text-v1.5", &embed);
        assert_eq!(
            f.capabilities.names(),
            ["embeddings", "similarity", "vector-search"]
        );
        let vllm = json!({"id": "Qwen/Qwen2.5-Coder-32B-Instruct", "object": "model",
            "owned_by": "vllm", "max_model_len": 131072});
        let f = Facts::of("Qwen/Qwen2.5-Coder-32B-Instruct", &vllm);
        assert_eq!((&*f.family, &*f.variant), ("qwen", "2.5"));
        assert_eq!((f.context_length, &*f.state), (Some(131072), "unknown"));
        assert!(f.capabilities.contains("code-generation"));
        assert!(f.capabilities.contains("long-context"));
        assert!(!f.capabilities.contains("extended-context"));
        assert_eq!(
            Facts::of("x", &Value::Null),
            Facts {
                state: "unknown".into(),
                capabilities: Capabilities(1),
                ..Facts::default()
            }
        );
    }

    #[test]
    fn sizes_and_quantisations_normalise_as_olla_does() {
        for (text, shown, count) in [
            ("8.0B", "8b", 8_000_000_000),
            ("7B", "7b", 7_000_000_000),
            ("1.5B", "1.5b", 1_500_000_000),
            ("494.03M", "494m", 494_030_000),
            ("1500M", "1.5b", 1_500_000_000),
            ("70.6B", "70.6b", 70_600_000_000),
            ("huge", "huge", 0),
        ] {
            assert_eq!(parameter_size(text), (shown.to_string(), count), "{text}");
        }
        for (q, n) in [
            ("Q4_K_M", "q4km"),
            ("q8_0", "q8"),
            ("F16", "f16"),
            ("BF16", "bf16"),
            ("MXFP4", "mxfp4"),
            ("llama-3.2-1b-instruct-q4_k_m.gguf", "q4km"),
            ("IQ3_XXS", "q3"),
            ("4bit", "4bit"),
            ("Q5_K_L", "q5kl"),
            ("Q6_2", "q6_2"),
        ] {
            assert_eq!(normalize_quantization(q), n, "{q}");
        }
    }
}
