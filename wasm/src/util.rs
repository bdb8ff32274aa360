//! Small browser helpers: time, randomness, timers, JSON conversions.

use serde::Serialize;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    let ms = js_sys::Date::now();
    if ms.is_finite() && ms > 0.0 { ms as u64 } else { 0 }
}

/// Whether this context has WebRTC (a page does; a worker does not).
pub(crate) fn has_webrtc() -> bool {
    js_sys::Reflect::has(&js_sys::global(), &JsValue::from_str("RTCPeerConnection")).unwrap_or(false)
}

/// Refuses to start syncing where there is no WebRTC, before anything is opened.
pub(crate) fn require_webrtc() -> Result<(), JsValue> {
    if has_webrtc() {
        Ok(())
    } else {
        Err(crate::error::network(
            "webrtc",
            "no WebRTC in this context (a worker?): a store here works offline and does not sync",
        ))
    }
}

fn crypto() -> Result<web_sys::Crypto, JsValue> {
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &JsValue::from_str("crypto"))?
        .dyn_into::<web_sys::Crypto>()
        .map_err(|_| crate::error::state("closed", "no WebCrypto in this context"))
}

/// Fills `buf` from `crypto.getRandomValues`.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), JsValue> {
    let crypto = crypto()?;
    for chunk in buf.chunks_mut(65_536) {
        crypto.get_random_values_with_u8_array(chunk)?;
    }
    Ok(())
}

/// `N` random bytes.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], JsValue> {
    let mut out = [0u8; N];
    fill_random(&mut out)?;
    Ok(out)
}

/// A value as a plain JS object (maps become objects, so `JSON.stringify` works).
pub(crate) fn to_js<T: Serialize + ?Sized>(value: &T) -> JsValue {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).unwrap_or(JsValue::UNDEFINED)
}

/// A plain JS object as a value.
pub(crate) fn from_js<T: serde::de::DeserializeOwned>(value: JsValue, what: &str) -> Result<T, JsValue> {
    serde_wasm_bindgen::from_value(value).map_err(|e| crate::error::input(&format!("{what}: {e}")))
}

/// `setTimeout(callback, ms)`, returning the handle.
pub(crate) fn set_timeout(callback: &Closure<dyn FnMut()>, ms: i32) -> Option<i32> {
    let global = js_sys::global();
    let f =
        js_sys::Reflect::get(&global, &JsValue::from_str("setTimeout")).ok()?.dyn_into::<js_sys::Function>().ok()?;
    f.call2(&global, callback.as_ref().unchecked_ref(), &JsValue::from(ms)).ok()?.as_f64().map(|h| h as i32)
}

/// `clearTimeout(handle)`.
pub(crate) fn clear_timeout(handle: i32) {
    let global = js_sys::global();
    if let Ok(f) =
        js_sys::Reflect::get(&global, &JsValue::from_str("clearTimeout")).and_then(|f| f.dyn_into::<js_sys::Function>())
    {
        let _ = f.call1(&global, &JsValue::from(handle));
    }
}

/// A promise that resolves after `ms`.
pub(crate) async fn sleep(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let global = js_sys::global();
        if let Ok(f) = js_sys::Reflect::get(&global, &JsValue::from_str("setTimeout"))
            .and_then(|f| f.dyn_into::<js_sys::Function>())
        {
            let _ = f.call2(&global, &resolve, &JsValue::from(ms));
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// Calls `f` once after `ms` milliseconds (the global `setTimeout`, in a window or a worker).
pub(crate) fn call_later(f: &js_sys::Function, ms: i32) {
    let global = js_sys::global();
    if let Ok(set_timeout) =
        js_sys::Reflect::get(&global, &JsValue::from_str("setTimeout")).and_then(|f| f.dyn_into::<js_sys::Function>())
    {
        let _ = set_timeout.call2(&global, f, &JsValue::from(ms));
    }
}

/// Logs a warning to the console.
pub(crate) fn warn(message: &str) {
    web_sys::console::warn_1(&JsValue::from_str(message));
}

/// A connection-lifecycle step, at `console.debug` (hidden unless the console shows verbose
/// messages; the browser benches print them with `--trace`).
pub(crate) fn trace(message: &str) {
    // Milliseconds within the minute: enough to read the gaps between steps.
    let at = now_ms() % 60_000;
    web_sys::console::debug_1(&JsValue::from_str(&format!("{at:>5} {message}")));
}
