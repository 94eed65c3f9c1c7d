"""The one translation table of the pages: every label a page shows, in Chinese (first) and English.

`text(key, lang)` picks a label; `lang_of(value)` reads a page's ?lang= (zh unless it says en)."""

LANGS = ("zh", "en")

LABELS: dict[str, tuple[str, str]] = {
    "app": ("网格化管理", "Grid management"),
    "sign_in": ("登录", "Sign in"),
    "sign_out": ("退出登录", "Sign out"),
    "user_name": ("用户名", "User name"),
    "password": ("密码或令牌", "Password or token"),
    "sign_in_hint": ("请输入用户名，以及密码或管理员发放的令牌。",
                     "Enter your user name, and your password or a token from your administrator."),
    "sign_in_failed": ("用户名或密码错误，或账号已停用。", "Wrong user name or password, or the account is disabled."),
    "sign_in_again": ("页面已过期，请重新登录。", "The form has expired; please sign in again."),
    "sign_in_limited": ("尝试次数过多，请稍后再试。", "Too many attempts; try again later."),
    "signed_out": ("已退出登录。", "You are signed out."),
    "other_lang": ("English", "中文"),
}


def lang_of(value: str | None) -> str:
    """The page language asked for: 'en' only when asked, else Chinese."""
    return "en" if value == "en" else "zh"


def text(key: str, lang: str) -> str:
    """The label `key` in `lang` (KeyError for a label missing from the table)."""
    return LABELS[key][LANGS.index(lang)]
