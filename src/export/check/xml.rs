//! Just enough XML reading for the OVF imgforge writes: start tags, attributes, element text.
//! No slicing by computed index: everything goes through `split_once`/`get`, so odd input yields
//! `None`, never a panic.

/// Value of attribute `name` in the tag text `tag` (`name="value"`).
pub fn xml_attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = tag.split_once(&format!(" {name}=\""))?;
    rest.split_once('"').map(|(value, _)| value)
}

/// Every start tag `<name ...>` in `xml`, as the text from `<` to `>`.
pub fn xml_tags<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let pat = format!("<{name}");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&pat) {
        let Some(from) = rest.get(i..) else { break };
        let Some(e) = from.find('>') else { break };
        let after = from.as_bytes().get(pat.len()).copied();
        if matches!(after, Some(b' ' | b'>' | b'/' | b'\n'))
            && let Some(tag) = from.get(..=e)
        {
            out.push(tag);
        }
        let Some(next) = from.get(e + 1..) else { break };
        rest = next;
    }
    out
}

/// Text content of the first `<name>…</name>` element in `xml`.
pub fn xml_text<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let (_, rest) = xml.split_once(&format!("<{name}>"))?;
    rest.split_once(&format!("</{name}>")).map(|(text, _)| text)
}

/// Replaces the five predefined entities.
pub fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}
