//! Synthetic tweet-length posts in English and Chinese, generated deterministically from small word lists,
//! so the benchmarks need no external data and measure the same inputs on every run.
//!
//! The texts look like what the detector sees: an optional "BREAKING:"-style opener, one to three clauses
//! built from a subject, a verb, an object and a time, numbers, and the noise normalization has to strip
//! (hashtags, @mentions, URLs, emoji, full-width punctuation). English posts are about 40 to 240
//! characters (median 116), Chinese posts about 12 to 100 (median 42), as on X and Weibo.

use crate::SplitMix;
use echotrace_core::prepare::normalize::is_cjk;
use words::{
    EMOJI, EN_ADJECTIVES, EN_CLOSERS, EN_DETERMINERS, EN_HASHTAGS, EN_NOUNS, EN_OPENERS, EN_PREPOSITIONS, EN_SYLLABLES,
    EN_TIMES, EN_TITLES, EN_VERBS, ZH_ADVERBS, ZH_CLOSERS, ZH_OBJECTS, ZH_OPENERS, ZH_PEOPLE, ZH_PLACES,
    ZH_PUNCTUATION, ZH_TAGS, ZH_TIMES, ZH_VERBS,
};

/// The language of a synthetic post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Space-separated English words.
    English,
    /// Chinese without spaces.
    Chinese,
}

/// The word lists, kept in rows (rustfmt would put one word per line).
#[rustfmt::skip]
mod words {
    pub(super) const EN_OPENERS: &[&str] = &[
        "BREAKING:", "Just in:", "Update:", "PSA:", "Wow.", "Honestly:", "Confirmed:", "Thread 🧵", "Heads up:",
    ];
    pub(super) const EN_SYLLABLES: &[&str] = &[
        "ka", "vel", "dor", "mir", "an", "tes", "lo", "rin", "bra", "zel", "qui", "nor", "sa", "ven", "tor", "li",
        "mar", "eth", "gon", "fa", "ril", "os", "den", "cal", "bo", "ith", "wen", "ur", "pel", "shan",
    ];
    pub(super) const EN_TITLES: &[&str] = &["Mayor", "Senator", "Dr.", "Coach", "Judge", "Officer", "Minister"];
    pub(super) const EN_DETERMINERS: &[&str] = &["the", "a", "our", "this", "every", "that", "their"];
    pub(super) const EN_ADJECTIVES: &[&str] = &[
        "local", "new", "old", "huge", "tiny", "secret", "official", "angry", "quiet", "massive", "viral", "public",
        "private", "broken", "famous", "young", "senior", "independent", "national", "rural", "urban", "leaked",
        "early", "late", "entire", "whole", "unexpected", "controversial", "historic", "emergency",
    ];
    pub(super) const EN_NOUNS: &[&str] = &[
        "mayor", "council", "bridge", "harbour", "school", "hospital", "police", "team", "coach", "senator", "company",
        "startup", "union", "court", "judge", "river", "storm", "flood", "fire", "train", "airport", "museum",
        "library", "festival", "concert", "market", "bank", "factory", "stadium", "park", "tower", "station", "highway",
        "tunnel", "report", "video", "photo", "statement", "budget", "vaccine", "virus", "election", "vote", "protest",
        "strike", "game", "match", "derby", "season", "album", "movie", "series", "actor", "singer", "scientist",
        "researcher", "study", "satellite", "rocket", "engineer", "maintainer", "patch", "update", "outage", "network",
        "phone", "price", "rent", "tax", "ticket", "road", "village", "city", "country", "border", "ministry", "agency",
        "spokesperson", "reporter", "witness", "neighbour", "teacher", "student", "doctor", "nurse", "farmer", "driver",
    ];
    pub(super) const EN_VERBS: &[&str] = &[
        "closed", "opened", "rejected", "approved", "announced", "cancelled", "confirmed", "denied", "leaked",
        "postponed", "blocked", "won", "lost", "found", "hid", "released", "banned", "flooded", "evacuated", "praised",
        "blamed", "sued", "fired", "hired", "raised", "cut", "launched", "delayed", "shared", "deleted", "investigated",
        "questioned", "rebuilt", "sold", "bought", "moved", "warned", "reopened", "shut", "defended",
    ];
    pub(super) const EN_PREPOSITIONS: &[&str] = &[
        "near", "after", "before", "behind", "outside", "inside", "around", "across", "without",
    ];
    pub(super) const EN_TIMES: &[&str] = &[
        "tonight", "this morning", "yesterday", "last week", "on Friday", "on Monday", "over the weekend", "for years",
        "again", "today", "right now", "this afternoon", "since March", "in secret", "for the first time",
    ];
    pub(super) const EN_CLOSERS: &[&str] = &[
        "Unbelievable.", "Stay safe everyone.", "Share this.", "More soon.", "Developing...", "What a day.",
        "Can't make this up.", "Thoughts?", "RT to spread the word.", "Source below.", "lol", "😂😂", "🚨🚨🚨",
    ];
    pub(super) const EN_HASHTAGS: &[&str] = &[
        "#breaking", "#news", "#local", "#update", "#weather", "#sports", "#tech", "#politics",
    ];
    pub(super) const EMOJI: &[&str] = &["🚨", "😂", "🔥", "👀", "🙏", "😱", "💔", "👏"];

    pub(super) const ZH_OPENERS: &[&str] = &[
        "【突发】", "#热点新闻#", "转发微博：", "刚刚，", "【提醒】", "紧急扩散！", "真相来了：",
    ];
    pub(super) const ZH_PLACES: &[&str] = &[
        "北京", "上海", "广州", "深圳", "成都", "杭州", "武汉", "西安", "南京", "重庆", "天津", "苏州", "长沙", "郑州",
        "青岛", "厦门", "昆明", "哈尔滨", "大连", "沈阳", "宁波", "无锡", "济南", "福州", "合肥", "南昌", "贵阳",
        "南宁", "兰州", "太原", "石家庄", "乌鲁木齐", "呼和浩特", "拉萨", "海口", "三亚", "珠海", "佛山", "东莞",
        "温州",
    ];
    pub(super) const ZH_PEOPLE: &[&str] = &[
        "网友", "市民", "记者", "警方", "专家", "学生", "老师", "司机", "医生", "志愿者", "官方", "乘客", "居民",
        "球迷", "消防员", "外卖小哥", "校长", "村民", "游客", "博主", "店主", "保安", "快递员", "护士", "交警", "主播",
        "粉丝", "家长", "邻居", "工程师",
    ];
    pub(super) const ZH_TIMES: &[&str] = &[
        "今天上午", "昨晚", "刚刚", "周末", "凌晨三点", "今天下午", "上周", "昨天", "近日", "本月",
    ];
    pub(super) const ZH_ADVERBS: &[&str] = &["突然", "终于", "已经", "正式", "再次", "紧急", "公开", "首次", "意外"];
    pub(super) const ZH_VERBS: &[&str] = &[
        "发布了", "曝光了", "发现了", "宣布", "呼吁", "拍到了", "回应了", "证实", "否认", "关闭了", "开通了", "取消了",
        "推迟了", "调查", "转发了", "删除了", "举报了", "救出了", "目击了", "支持", "反对", "排查", "修复了", "暂停了",
        "恢复了", "通报了",
    ];
    pub(super) const ZH_OBJECTS: &[&str] = &[
        "视频", "消息", "通知", "照片", "地铁事故", "暴雨预警", "交通管制", "新政策", "调查结果", "演唱会门票", "房价",
        "疫苗", "飞碟坠毁事件", "外星人视频", "高铁线路", "大桥", "医院", "学校", "比赛", "新手机", "火灾", "地震",
        "寒潮", "台风", "商场", "机场航班", "景区门票", "停水通知", "招聘信息", "食品安全问题", "新规定", "停电通知",
        "地铁新线", "老房子", "流浪猫", "野生动物", "古建筑", "限行措施", "学区房", "电动车", "充电桩", "共享单车",
        "无人机", "天然气管道", "垃圾分类", "核酸检测", "退休金", "高速公路", "体育馆", "夜市", "小区门禁", "快递包裹",
        "假新闻", "网红餐厅", "博物馆", "隧道", "水库", "山火", "沙尘暴", "冰雹",
    ];
    pub(super) const ZH_CLOSERS: &[&str] = &[
        "大家注意安全", "太可怕了", "转发扩散", "求证", "哈哈哈", "支持", "有图有真相", "真的假的", "震惊", "心疼",
        "不敢相信", "关注后续",
    ];
    pub(super) const ZH_PUNCTUATION: &[&str] = &["，", "。", "！", "？", "……", "、"];
    pub(super) const ZH_TAGS: &[&str] = &["[哈哈]", "[泪]", "[怒]", "[赞]", "[吃惊]"];
}

fn pick<'a>(rng: &mut SplitMix, words: &[&'a str]) -> &'a str {
    words[rng.below(words.len())]
}

fn chance(rng: &mut SplitMix, percent: usize) -> bool {
    rng.below(100) < percent
}

/// One synthetic post text.
pub fn post_text(language: Language, rng: &mut SplitMix) -> String {
    match language {
        Language::English => english(rng),
        Language::Chinese => chinese(rng),
    }
}

/// `n` synthetic post texts of one language.
pub fn corpus(language: Language, n: usize, rng: &mut SplitMix) -> Vec<String> {
    (0..n).map(|_| post_text(language, rng)).collect()
}

/// A made-up proper name of two or three syllables: the long tail of names and places real posts have.
fn english_name(rng: &mut SplitMix) -> String {
    let syllables = 2 + rng.below(2);
    capitalize(&(0..syllables).map(|_| pick(rng, EN_SYLLABLES)).collect::<String>())
}

fn english_noun_phrase(rng: &mut SplitMix, out: &mut Vec<String>) {
    if chance(rng, 20) {
        if chance(rng, 50) {
            out.push(pick(rng, EN_TITLES).to_owned());
        }
        out.push(english_name(rng));
        return;
    }
    out.push(pick(rng, EN_DETERMINERS).to_owned());
    if chance(rng, 50) {
        out.push(pick(rng, EN_ADJECTIVES).to_owned());
    }
    out.push(pick(rng, EN_NOUNS).to_owned());
}

fn english_clause(rng: &mut SplitMix, out: &mut Vec<String>) {
    english_noun_phrase(rng, out);
    out.push(pick(rng, EN_VERBS).to_owned());
    if chance(rng, 25) {
        out.push(format!("{}", 2 + rng.below(998)));
        out.push(format!("{}s", pick(rng, EN_NOUNS)));
    } else {
        english_noun_phrase(rng, out);
    }
    if chance(rng, 60) {
        out.push(pick(rng, EN_PREPOSITIONS).to_owned());
        english_noun_phrase(rng, out);
    }
    if chance(rng, 30) {
        out.push("in".to_owned());
        out.push(english_name(rng));
    }
    if chance(rng, 60) {
        out.push(pick(rng, EN_TIMES).to_owned());
    } else if chance(rng, 30) {
        out.push(format!("at {}pm", 1 + rng.below(12)));
    }
}

fn english(rng: &mut SplitMix) -> String {
    let mut words: Vec<String> = Vec::new();
    if chance(rng, 30) {
        words.push(pick(rng, EN_OPENERS).to_owned());
    }
    if chance(rng, 10) {
        words.push(format!("@user{}", rng.below(100_000)));
    }
    let first = words.len();
    english_clause(rng, &mut words);
    if let Some(word) = words.get_mut(first) {
        *word = capitalize(word);
    }
    if chance(rng, 50) {
        if let Some(last) = words.last_mut() {
            last.push(',');
        }
        words.push(if chance(rng, 50) { "and" } else { "while" }.to_owned());
        english_clause(rng, &mut words);
    }
    if let Some(last) = words.last_mut() {
        last.push(if chance(rng, 30) { '!' } else { '.' });
    }
    if chance(rng, 40) {
        words.push(pick(rng, EN_CLOSERS).to_owned());
    }
    for _ in 0..rng.below(3) {
        words.push(pick(rng, EN_HASHTAGS).to_owned());
    }
    if chance(rng, 30) {
        words.push(pick(rng, EMOJI).to_owned());
    }
    if chance(rng, 35) {
        words.push(format!("https://t.co/{}", token(rng, 10)));
    }
    words.join(" ")
}

fn chinese_clause(rng: &mut SplitMix, out: &mut String) {
    if chance(rng, 50) {
        out.push_str(pick(rng, ZH_PLACES));
    }
    out.push_str(pick(rng, ZH_PEOPLE));
    if chance(rng, 60) {
        out.push_str(pick(rng, ZH_TIMES));
    }
    if chance(rng, 40) {
        out.push_str(pick(rng, ZH_ADVERBS));
    }
    out.push_str(pick(rng, ZH_VERBS));
    if chance(rng, 40) {
        out.push_str(pick(rng, ZH_PLACES));
    }
    out.push_str(pick(rng, ZH_OBJECTS));
    if chance(rng, 20) {
        out.push_str(&format!("{}人", 2 + rng.below(500)));
    }
}

fn chinese(rng: &mut SplitMix) -> String {
    let mut text = String::new();
    if chance(rng, 30) {
        text.push_str(pick(rng, ZH_OPENERS));
    }
    if chance(rng, 15) {
        text.push_str(&format!("@{}{} ", pick(rng, ZH_PEOPLE), rng.below(10_000)));
    }
    for clause in 0..1 + rng.below(3) {
        if clause > 0 {
            text.push_str(pick(rng, ZH_PUNCTUATION));
        }
        chinese_clause(rng, &mut text);
    }
    text.push_str(pick(rng, &["。", "！", "！！", "……"]));
    if chance(rng, 50) {
        text.push_str(pick(rng, ZH_CLOSERS));
        text.push_str(pick(rng, ZH_TAGS));
    }
    if chance(rng, 25) {
        text.push_str(pick(rng, EMOJI));
    }
    if chance(rng, 40) {
        text.push_str(&format!("http://t.cn/{}", token(rng, 7)));
    }
    text
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// A URL-shortener-like token of `len` ASCII letters and digits.
fn token(rng: &mut SplitMix, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len).map(|_| char::from(ALPHABET[rng.below(ALPHABET.len())])).collect()
}

/// A light edit of `text`, as a copier makes one: a Chinese text gets one character replaced, an English
/// text one lower-case word replaced by a noun.
pub fn light_edit(text: &str, rng: &mut SplitMix) -> String {
    let cjk: Vec<usize> = text.char_indices().filter(|(_, c)| is_cjk(*c)).map(|(at, _)| at).collect();
    if !cjk.is_empty() {
        let at = cjk[rng.below(cjk.len())];
        let replacement = pick(rng, ZH_OBJECTS).chars().next().unwrap_or('的');
        let width = text[at..].chars().next().map_or(0, char::len_utf8);
        return format!("{}{replacement}{}", &text[..at], &text[at + width..]);
    }
    let mut words: Vec<&str> = text.split(' ').collect();
    let plain: Vec<usize> = (0..words.len()).filter(|&i| words[i].chars().all(|c| c.is_ascii_lowercase())).collect();
    if let Some(&i) = plain.get(rng.below(plain.len())) {
        words[i] = pick(rng, EN_NOUNS);
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_are_deterministic_and_tweet_length() {
        for language in [Language::English, Language::Chinese] {
            let a = corpus(language, 200, &mut SplitMix(1));
            assert_eq!(a, corpus(language, 200, &mut SplitMix(1)));
            let mean = a.iter().map(|t| t.chars().count()).sum::<usize>() / a.len();
            assert!((20..=200).contains(&mean), "{language:?}: mean {mean} chars");
        }
    }

    #[test]
    fn light_edits_change_one_token() {
        let mut rng = SplitMix(3);
        for language in [Language::English, Language::Chinese] {
            let text = post_text(language, &mut rng);
            let edited = light_edit(&text, &mut rng);
            assert!(text.chars().count().abs_diff(edited.chars().count()) < 12, "{text} / {edited}");
        }
    }
}
