//! HTML pieces: the page frame, escaping, and the few widgets the pages share.

/// Text made safe for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: title, who is logged in (with the logout form), a flash, the body.
pub(crate) fn page(title: &str, who: Option<(&str, &str)>, flash: Option<&(bool, String)>, body: &str) -> String {
    let user = who.map_or_else(String::new, |(login, csrf)| {
        format!(
            r#"<form method="post" action="/console/logout" class="who">{} <input type="hidden" name="csrf" value="{}"><button>Log out</button></form>"#,
            esc(login),
            esc(csrf)
        )
    });
    let flash = flash.map_or_else(String::new, |(error, text)| {
        let (class, role) = if *error { ("flash error", "alert") } else { ("flash ok", "status") };
        format!(r#"<p class="{class}" role="{role}">{}</p>"#, esc(text))
    });
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · Berth</title><link rel="stylesheet" href="/console/style.css"></head>
<body><header><a href="/console" class="brand">Berth</a>{user}</header><main>{flash}{body}</main></body></html>"#,
        esc(title)
    )
}

/// The hidden CSRF field every form carries.
pub(crate) fn csrf(token: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(token))
}

/// A labelled number input, empty for "the default".
pub(crate) fn number(name: &str, label: &str, value: Option<u64>) -> String {
    let value = value.map(|v| v.to_string()).unwrap_or_default();
    format!(r#"<label>{} <input type="number" min="0" name="{name}" value="{value}"></label>"#, esc(label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_text_is_escaped() {
        assert_eq!(
            esc(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
