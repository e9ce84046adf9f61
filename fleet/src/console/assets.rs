//! The console's static files, inside the binary: htmx (vendored from npm, fleet/assets/README.md)
//! and the style sheet. Each is served with its content type and a long cache lifetime: the
//! file names are versioned, so a new binary serves new names.

/// htmx's path (its version in the name).
pub const HTMX_PATH: &str = "/static/htmx-2.0.11.min.js";
/// htmx 2.0.11, `dist/htmx.min.js` of npm `htmx.org`.
pub const HTMX: &[u8] = include_bytes!("../../assets/htmx-2.0.11.min.js");
/// Its Subresource Integrity hash, as the page's `<script integrity>` carries it.
pub const HTMX_SRI: &str =
    "sha384-2OatzQy1H+Zd/IIrjr1TcuDGqLXeHhbooAyJY1KdQMKnr4LZ22k31GBLdYKHmVjg";

/// The style sheet's path.
pub const CSS_PATH: &str = "/static/console.css";
/// The style sheet (light and dark themes by `prefers-color-scheme`).
pub const CSS: &str = include_str!("../../assets/console.css");

// ---- console: device page (uPlot and the charts script) ----

/// uPlot's path (its version in the name).
pub const UPLOT_JS_PATH: &str = "/static/uplot-1.6.32.min.js";
/// uPlot 1.6.32, `dist/uPlot.iife.min.js` of npm `uplot` (MIT, `uplot-LICENSE`).
pub const UPLOT_JS: &[u8] = include_bytes!("../../assets/uplot-1.6.32.min.js");
/// Its Subresource Integrity hash.
pub const UPLOT_JS_SRI: &str =
    "sha384-Gx3t0zdBAuQOuvvmaLZj7HKEiSgWTAs+VdtNY7wt19QDPTDQjFIwAuXDj0zeN00c";
/// uPlot's style sheet's path.
pub const UPLOT_CSS_PATH: &str = "/static/uplot-1.6.32.min.css";
/// uPlot 1.6.32, `dist/uPlot.min.css`.
pub const UPLOT_CSS: &[u8] = include_bytes!("../../assets/uplot-1.6.32.min.css");
/// Its Subresource Integrity hash.
pub const UPLOT_CSS_SRI: &str =
    "sha384-IfV0B7MIOYuO95kO9G5ySKPz/85zqFNOAs8iy4tkK5zd9izhJAB8b7lHrwYqqmYE";
/// The device page's charts script (ours): reads the chart data as JSON, draws with uPlot.
pub const CHARTS_JS_PATH: &str = "/static/device-charts.js";
/// The script.
pub const CHARTS_JS: &[u8] = include_bytes!("../../assets/device-charts.js");

/// The charts script's SRI hash, computed once from the embedded file (ours, changed with the
/// code: the page names exactly the bytes this binary serves).
pub fn charts_js_sri() -> &'static str {
    static SRI: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SRI.get_or_init(|| sri_sha384(CHARTS_JS))
}

/// analytics (issue 13 part 2): the Analytics page's charts script (ours).
pub const ANALYTICS_JS_PATH: &str = "/static/analytics-charts.js";
/// Its bytes.
pub const ANALYTICS_JS: &[u8] = include_bytes!("../../assets/analytics-charts.js");

/// The analytics script's SRI hash, computed once from the embedded file.
pub fn analytics_js_sri() -> &'static str {
    static SRI: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SRI.get_or_init(|| sri_sha384(ANALYTICS_JS))
}

/// ota (issue 14): the Updates page's upload script (ours): posts the chosen bundle file to
/// `POST /api/v1/bundles` with the session's CSRF token and shows the answer.
pub const UPDATES_JS_PATH: &str = "/static/updates.js";
/// Its bytes.
pub const UPDATES_JS: &[u8] = include_bytes!("../../assets/updates.js");

/// The upload script's SRI hash, computed once from the embedded file.
pub fn updates_js_sri() -> &'static str {
    static SRI: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SRI.get_or_init(|| sri_sha384(UPDATES_JS))
}

/// The SRI form (`sha384-` and base64) of a file's SHA-384.
pub fn sri_sha384(data: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digest = ring::digest::digest(&ring::digest::SHA384, data);
    let mut out = String::from("sha384-");
    for chunk in digest.as_ref().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_htmx_is_the_file_its_integrity_hash_names() {
        assert_eq!(sri_sha384(HTMX), HTMX_SRI);
        assert!(HTMX_PATH.ends_with("htmx-2.0.11.min.js"));
        // The base64 of the SRI form, checked on a known vector (SHA-384 of "abc").
        assert_eq!(
            sri_sha384(b"abc"),
            "sha384-ywB1P0WjXou1oD1pmsZQBycsMqsO3tFjGotgWkP/W+2AhgcroefMI1i67KE0yCWn"
        );
    }

    #[test]
    fn the_vendored_uplot_is_the_release_its_integrity_hashes_name() {
        assert_eq!(sri_sha384(UPLOT_JS), UPLOT_JS_SRI);
        assert_eq!(sri_sha384(UPLOT_CSS), UPLOT_CSS_SRI);
        assert!(UPLOT_JS.starts_with(b"/*! https://github.com/leeoniya/uPlot (v1.6.32) */"));
        assert!(UPLOT_JS_PATH.ends_with("uplot-1.6.32.min.js"));
        assert!(UPLOT_CSS_PATH.ends_with("uplot-1.6.32.min.css"));
        assert_eq!(charts_js_sri(), sri_sha384(CHARTS_JS));
        // No eval in either script (the CSP has no 'unsafe-eval').
        for js in [UPLOT_JS, CHARTS_JS, ANALYTICS_JS, UPDATES_JS] {
            let text = String::from_utf8_lossy(js);
            assert!(!text.contains("eval(") && !text.contains("new Function"));
        }
    }
}
