//! Model configuration. `BertConfig` follows Hugging Face's `config.json` (GLIP takes the
//! BERT size from bert-base-uncased's hub config, which no GLIP yaml carries).

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// The BERT hyper-parameters GLIP uses, read from an HF-style `config.json`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct BertConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_maxpos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_types")]
    pub type_vocab_size: usize,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

fn d_vocab() -> usize {
    30522
}
fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_inter() -> usize {
    3072
}
fn d_act() -> String {
    "gelu".into()
}
fn d_maxpos() -> usize {
    512
}
fn d_types() -> usize {
    2
}
fn d_eps() -> f64 {
    1e-12
}

impl Default for BertConfig {
    /// bert-base-uncased.
    fn default() -> Self {
        BertConfig {
            vocab_size: d_vocab(),
            hidden_size: d_hidden(),
            num_hidden_layers: d_layers(),
            num_attention_heads: d_heads(),
            intermediate_size: d_inter(),
            hidden_act: d_act(),
            max_position_embeddings: d_maxpos(),
            type_vocab_size: d_types(),
            layer_norm_eps: d_eps(),
        }
    }
}

impl BertConfig {
    pub fn from_json_str(s: &str, what: &str) -> Result<Self> {
        let c: BertConfig = serde_json::from_str(s)
            .map_err(|e| Error::Config(format!("{what}: not a BERT config.json: {e}")))?;
        c.validate(what)?;
        Ok(c)
    }
    pub fn from_file(path: &Path) -> Result<Self> {
        let s = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&s, &path.display().to_string())
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }
    fn validate(&self, what: &str) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::Config(format!(
                "{what}: hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.hidden_act != "gelu" {
            return Err(Error::Config(format!(
                "{what}: hidden_act `{}` is not supported (GLIP uses gelu)",
                self.hidden_act
            )));
        }
        Ok(())
    }
}
