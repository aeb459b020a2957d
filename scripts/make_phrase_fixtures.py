#!/usr/bin/env python3
"""Makes tests/testdata/phrases/fixtures.json: for every caption of captions.txt, what GLIP's
demo (`find_noun_phrases`, `remove_punctuation`, `run_ner` in predictor_glip.py) gives when
its tagger is

  * "pattern": Pattern's Brill tagger as TextBlob 0.20.1 implements it
    (`textblob._text.find_tags` with the lexicon's morphology, context and entities), on the
    data TextBlob ships: the tagger `glip detect --phrases auto` reimplements, so its tokens,
    tags and entities must equal these exactly;
  * "wink": wink-pos-tagger 2.2.2 (npm; its own lexicon and rules, trained apart from
    Pattern): an independent tagger, to measure how far phrases depend on the tagger.

GLIP's own tagger, NLTK's averaged perceptron, needs NLTK data that no package ships (it is
downloaded from GitHub by `nltk.download`), so it cannot be run here.

Tokens are NLTK's: `NLTKWordTokenizer` (nltk 3.10.4) on each sentence of Punkt without its
trained English parameters (those are NLTK data too). Chunks are NLTK's RegexpParser with
GLIP's rule.

    python3 -m pip install nltk==3.10.4 textblob==0.20.1
    (cd "$(mktemp -d)" && npm install wink-pos-tagger@2.2.2 && echo "$PWD")  # → WINK_DIR
    WINK_DIR=... python3 scripts/make_phrase_fixtures.py tests/testdata/phrases
"""
import importlib.metadata
import json
import os
import re
import subprocess
import sys

import nltk
from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktSentenceTokenizer
from textblob import _text
from textblob.en import lexicon

GRAMMAR = "NP: {<DT>?<JJ.*>*<NN.*>+}"  # predictor_glip.py:466
PUNCT = ['|', ':', ';', '@', '(', ')', '[', ']', '{', '}', '^', '\'', '"', '’', '`', '?', '$',
         '%', '#', '!', '&', '*', '+', ',', '.']  # predictor_glip.py:478-484

WINK_JS = """
const tagger = require('wink-pos-tagger')();
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify(input.map(t => tagger.tagRawTokens(t).map(x => x.pos))));
"""


def tokens_of(caption):
    lower = caption.lower()
    words = NLTKWordTokenizer()
    return [t for s in PunktSentenceTokenizer().tokenize(lower) for t in words.tokenize(s)]


def pattern_tags(tokens):
    tagged = _text.find_tags(
        list(tokens), lexicon=lexicon, morphology=lexicon.morphology,
        context=lexicon.context, entities=lexicon.entities,
        default=("NN", "NNP", "CD"), language="en")
    return [t for _, t in tagged]


def phrases_of(tokens, tags):
    tree = nltk.RegexpParser(GRAMMAR).parse(list(zip(tokens, tags)))
    out = [' '.join(w for w, _ in st.leaves()) for st in tree.subtrees() if st.label() == 'NP']
    for p in PUNCT:
        out = [x.replace(p, '') for x in out]
    return [x.strip() for x in out if x.strip() != '']


def entities_of(caption, phrases):
    """run_ner: every regex occurrence of every phrase in caption.lower()."""
    out = []
    for phrase in phrases:
        for m in re.finditer(phrase, caption.lower()):
            out.append([phrase, m.start(), m.end()])
    return out


def main(out_dir):
    with open(os.path.join(out_dir, "captions.txt"), encoding="utf-8") as f:
        captions = [line.rstrip("\n") for line in f if line.strip()]
    tokens = [tokens_of(c) for c in captions]
    wink = subprocess.run(["node", "-e", WINK_JS], input=json.dumps(tokens), text=True,
                          capture_output=True, check=True, cwd=os.environ["WINK_DIR"])
    wink_tags = json.loads(wink.stdout)
    cases = []
    for caption, toks, wtags in zip(captions, tokens, wink_tags):
        ptags = pattern_tags(toks)
        phrases = phrases_of(toks, ptags)
        cases.append({
            "caption": caption,
            "tokens": toks,
            "pattern_tags": ptags,
            "pattern_phrases": phrases,
            "pattern_entities": entities_of(caption, phrases),
            "wink_tags": wtags,
            "wink_phrases": phrases_of(toks, wtags),
        })
    versions = {p: importlib.metadata.version(p) for p in ("nltk", "textblob")}
    versions["wink-pos-tagger"] = json.load(open(os.path.join(
        os.environ["WINK_DIR"], "node_modules", "wink-pos-tagger", "package.json")))["version"]
    with open(os.path.join(out_dir, "fixtures.json"), "w", encoding="utf-8") as f:
        json.dump({"made_with": versions, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(cases)} captions → {out_dir}/fixtures.json", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
