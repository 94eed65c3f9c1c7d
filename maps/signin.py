"""The sign-in page: a user name and a password (or a token) in, a session cookie out (api.routes.signin)."""

from maps.html import FONT, esc
from maps.i18n import text


def build(lang: str, next_path: str, form_key: str, message_key: str | None = None, name: str = "") -> str:
    """The page's HTML in `lang`; `form_key` is the form's anti-forgery value, `message_key` a label to show."""
    other = "zh" if lang == "en" else "en"
    message = f'<p class="msg" role="alert">{esc(text(message_key, lang))}</p>' if message_key else ""
    return f"""<!doctype html>
<html lang="{'zh-CN' if lang == 'zh' else 'en'}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(text("sign_in", lang))} · {esc(text("app", lang))}</title>
<style>
body {{ font-family: {FONT}; background: #f3f5f8; margin: 0; display: flex; min-height: 100vh;
       align-items: center; justify-content: center; }}
form {{ background: #fff; padding: 28px 32px; border-radius: 8px; box-shadow: 0 2px 12px rgba(0,0,0,.12);
       width: min(340px, 90vw); }}
h1 {{ font-size: 20px; margin: 0 0 6px; }} p {{ color: #555; font-size: 14px; }}
label {{ display: block; margin: 14px 0 4px; font-size: 14px; }}
input[type=text], input[type=password] {{ width: 100%; box-sizing: border-box; padding: 8px; font-size: 16px; }}
button {{ margin-top: 18px; width: 100%; padding: 10px; font-size: 16px; background: #1f6feb; color: #fff;
         border: 0; border-radius: 4px; cursor: pointer; }}
.msg {{ color: #b42318; }} .lang {{ float: right; font-size: 13px; }}
</style></head><body>
<form method="post" action="/login">
<a class="lang" href="/login?lang={other}&amp;next={esc(next_path)}">{esc(text("other_lang", lang))}</a>
<h1>{esc(text("app", lang))} · {esc(text("sign_in", lang))}</h1>
<p>{esc(text("sign_in_hint", lang))}</p>{message}
<label for="name">{esc(text("user_name", lang))}</label>
<input id="name" name="name" type="text" autocomplete="username" required maxlength="200" value="{esc(name)}">
<label for="secret">{esc(text("password", lang))}</label>
<input id="secret" name="secret" type="password" autocomplete="current-password" required maxlength="500">
<input type="hidden" name="next" value="{esc(next_path)}">
<input type="hidden" name="form_key" value="{esc(form_key)}">
<input type="hidden" name="lang" value="{lang}">
<button type="submit">{esc(text("sign_in", lang))}</button>
</form></body></html>"""
