#!/usr/bin/env python3
"""Generate the echotrace demo stream, services/echotrace/demo/sample.jsonl.

Standard library only and fully deterministic: one random.Random with a fixed
seed drives every choice, nothing iterates over a set or depends on the hash
seed, so running the script twice writes identical bytes.

What the stream holds (see README.md beside this file):

* background chatter from ~150 established accounts on x, bluesky, mastodon,
  threads and weibo: everyday posts composed from many short fragments,
  replies to earlier chatter and plain reposts;
* one benign cascade: a popular bluesky post with 5 genuine reposts/quotes;
* one amplification campaign on x, bluesky, mastodon and threads, starting at
  about minute 10: a false claim about a fictional maintainer posted by a
  two-day-old account, then 40 derived posts from fresh, low-follower accounts
  within ~8 minutes (exact copies, light edits, explicit reposts/quotes and
  rewrites that share the same article URL with different utm_* parameters).

Every person, account, outlet, team, place and URL here is invented.

Usage:
    python3 generate_sample.py            # writes sample.jsonl beside this file
    python3 generate_sample.py --check    # exits 1 if sample.jsonl is stale
    python3 generate_sample.py --summary  # also prints a Markdown summary
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import re
import sys
from pathlib import Path

SEED = 20261101
START = dt.datetime(2026, 11, 1, 9, 0, 0, tzinfo=dt.timezone.utc)
DURATION_MS = 30 * 60 * 1000
TOTAL_POSTS = 500
CHATTER_ACCOUNTS = {"x": 48, "bluesky": 36, "mastodon": 27, "threads": 27, "weibo": 12}
# Share of chatter slots per platform (weights, not exact counts).
CHATTER_PLATFORM_WEIGHTS = [("x", 34), ("bluesky", 24), ("mastodon", 17), ("threads", 17), ("weibo", 8)]
REPLY_SHARE = 0.09
REPOST_SHARE = 0.06
URL_SHARE = 0.15
CAMPAIGN_START_MS = 10 * 60 * 1000 + 2417  # 09:10:02.417
CAMPAIGN_WINDOW_MS = 8 * 60 * 1000

OUT_PATH = Path(__file__).resolve().parent / "sample.jsonl"
UTC = dt.timezone.utc
CST = dt.timezone(dt.timedelta(hours=8))

rng = random.Random(SEED)

# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

B32_SORT = "234567abcdefghijklmnopqrstuvwxyz"
B32_LOWER = "abcdefghijklmnopqrstuvwxyz234567"
SHORTCODE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def ts_at(ms: int) -> dt.datetime:
    return START + dt.timedelta(milliseconds=ms)


def rand_digits(n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def fmt_time(platform: str, when: dt.datetime) -> str:
    """Each platform's collector formats timestamps a little differently."""
    if platform == "x":
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if platform in ("bluesky", "mastodon"):
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    if platform == "threads":
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    if platform == "weibo":
        return when.astimezone(CST).strftime("%Y-%m-%dT%H:%M:%S+08:00")
    raise ValueError(platform)


def effective_ms(platform: str, ms: int) -> int:
    """The instant that fmt_time will actually express for an offset in ms."""
    if platform == "bluesky" or platform == "mastodon":
        return ms
    return ms - (ms % 1000)


def fmt_account_time(when: dt.datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_used_ids: list[str] = []
_used_id_lookup: dict[str, None] = {}


def post_id(platform: str, ms: int) -> str:
    """Ordinary-looking, time-ordered native ids, unique in the sample."""
    while True:
        if platform == "x":
            native = str(1791204553000000000 + ms * 4194304 + rng.randrange(4194304))
        elif platform == "bluesky":
            value = ((0x1D2C6F3A9B000 + ms * 1000 + rng.randrange(1000)) << 10) | rng.randrange(1024)
            chars = []
            for _ in range(11):
                chars.append(B32_SORT[value & 31])
                value >>= 5
            native = "3k" + "".join(reversed(chars))
        elif platform == "mastodon":
            native = str(113408000000000000 + (ms << 16) + rng.randrange(65536))
        elif platform == "threads":
            native = "C" + "".join(rng.choice(SHORTCODE) for _ in range(10))
        elif platform == "weibo":
            native = str(5108820000000000 + ms * 1000 + rng.randrange(1000))
        else:
            raise ValueError(platform)
        pid = f"{platform}:{native}"
        if pid not in _used_id_lookup:
            _used_id_lookup[pid] = None
            _used_ids.append(pid)
            return pid


def author_id(platform: str, fresh: bool) -> str:
    if platform == "x":
        return "x:u:" + (("18" + rand_digits(17)) if fresh else str(rng.randrange(10**7, 3 * 10**9)))
    if platform == "bluesky":
        return "did:plc:" + "".join(rng.choice(B32_LOWER) for _ in range(24))
    if platform == "mastodon":
        return "mastodon:acct:" + ("1134" if fresh else "10" + str(rng.randrange(90, 99))) + rand_digits(14)
    if platform == "threads":
        return "threads:u:" + ("63" if fresh else str(rng.randrange(10, 60))) + rand_digits(9)
    if platform == "weibo":
        return "weibo:u:" + str(rng.randrange(1000000000, 7999999999))
    raise ValueError(platform)


# --------------------------------------------------------------------------
# Word lists (all invented)
# --------------------------------------------------------------------------

FIRST = [
    "ines", "tomas", "priya", "gwen", "rafael", "marisol", "oskar", "ade", "hana", "lucan",
    "bea", "idris", "nora", "felix", "yara", "corin", "maeve", "dmitri", "ottilie", "kwame",
    "saoirse", "teodor", "lena", "amaru", "juno", "wren", "caspian", "farah", "elio", "rosalind",
    "tobias", "mirela", "anouk", "benedikt", "zainab", "halvard", "cleo", "ruben", "ilse", "jonah",
    "paloma", "ewan", "signe", "malik", "ottavia", "fenna", "arlo", "keziah", "viggo", "selin",
]
LAST = [
    "okafor", "reyes", "lindqvist", "marsh", "abara", "keane", "vesely", "bello", "moreau", "thorne",
    "castellano", "ferris", "nakagawa", "oduya", "pellegrini", "quill", "rask", "sandoval", "tamm", "umber",
    "valdez", "whitcombe", "yilmaz", "zeller", "ashdown", "brennick", "corvalan", "dunmore", "eklund", "farrow",
]
MASTODON_INSTANCES = ["harlowbay.social", "greywater.social", "kelden.town", "tollmere.place", "eastbrook.zone"]
WEIBO_HANDLES = [
    "山城小周", "爱吃面的阿林", "杭州晴天", "青岛海风吹", "厦门的小鱼", "长沙夜宵王",
    "苏州慢生活", "昆明的云", "西安老陈", "大连跑步人", "南京读书猫", "成都懒人日记",
    "江边散步的人", "早起的小麦",
]

CITY = ["Harlow Bay", "Marrowfield", "Eastbrook", "Kelden", "Port Avery", "Summerleigh",
        "Ashcombe", "Greywater", "Tollmere", "Brackenford"]
STREET = ["Fenwick Street", "Calder Avenue", "Mill Lane", "Orchard Row", "Tanner's Bridge",
          "Quayside Road", "Hollis Street", "Bellamy Square", "Station Hill", "Larch Crescent"]
TEAM = ["Comets", "Herons", "Rovers", "Foxes", "Mariners", "Owls", "Kestrels"]
DAY = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTH = ["January", "February", "March", "April"]
FOOD = ["ramen", "shakshuka", "banana bread", "dumplings", "lentil soup", "tacos", "jollof rice",
        "pierogi", "pho", "khachapuri", "fish pie", "chili", "green curry", "risotto", "flapjacks"]
CAFE = ["the Lantern Room", "Little Fig", "Dockside Noodle Bar", "Bramble & Rye", "Mama Oyelaran's",
        "Pip's Diner", "Saltmarsh Cafe", "the Tin Teapot"]
PET = ["cat", "dog", "parrot", "tortoise", "rabbit", "kitten", "greyhound", "hamster"]
GADGET = ["laptop", "phone", "router", "e-reader", "smartwatch", "printer", "dishwasher",
          "kettle", "headphones", "thermostat"]
LANG = ["Rust", "Python", "Go", "TypeScript", "Kotlin", "Elixir", "Haskell", "Swift", "Zig", "OCaml"]
RELATIVE = ["dad", "mum", "aunt", "brother", "flatmate", "grandad", "sister", "uncle"]
TIME = ["6am", "7:15", "half five", "midnight", "2am", "quarter past eight", "ten last night"]

SLOTS = {
    "city": CITY, "street": STREET, "team": TEAM, "day": DAY, "month": MONTH, "food": FOOD,
    "cafe": CAFE, "pet": PET, "gadget": GADGET, "lang": LANG, "relative": RELATIVE, "time": TIME,
}

# Fragments use "[a|b|c]" for a choice of wording and "{slot}" for a value
# from the lists above, so that no long fixed run repeats across posts.
EN_CORES = {
    "weather": [
        "[Rain|Drizzle|Sleet] again in {city}, [third|fourth|fifth] day [running|in a row].",
        "Woke up to [frost|ice] on the [windscreen|bike seat|doorstep] in {city}.",
        "{temp} degrees and [sunny|bright] in {city}, [which feels illegal|absolutely unhinged|suspicious] for November.",
        "The fog over {city} is [so thick|ridiculous today], I can't see [across the road|the next lamppost|my own gate].",
        "Wind knocked our bins over at {time} and {street} is [one big recycling pile|covered in cardboard|a mess].",
        "Forecast said [light drizzle|a dry spell|sunny intervals]. [This is not that|It lied|Reader, it poured].",
        "Hail for [ten|five|fifteen] minutes then [blue skies|full sunshine], [classic|typical] {city}.",
        "Bought a new umbrella on {day}, it [died heroically|turned inside out|flew off] this morning.",
        "Somehow [warmer|colder] at {time} than [it was at noon|yesterday afternoon].",
        "First proper [cold|frosty|crisp] morning, [scarf|glove|hat] season is [open|here].",
        "Rainbow [right over|above] {street} just now and the [whole bus|entire queue] went quiet.",
        "Power flickered [twice|three times] [in the storm|last night], candles [are on standby|at the ready].",
    ],
    "sports": [
        "The {team} won {score} [last night|on {day}] and I [still don't believe it|am still buzzing|have no voice left].",
        "The [refereeing|officiating] in the {team} game was [baffling|a mystery|something else].",
        "That late [equaliser|winner] from the {team}! My [neighbours|whole street|downstairs flat] heard everything.",
        "The {team} need a new [goalkeeper|striker|manager], [I'm saying it out loud|fight me|there, I said it].",
        "Got tickets for the {team} on {day}, [first match since spring|can't wait|bringing the kids].",
        "[Park run|Morning run|Canal loop] this morning, {n} seconds off my [best time|PB].",
        "Kids' [football|hockey|rugby] practice in the [rain|mud|cold] builds character, [mine included|apparently].",
        "Watching darts at {time} on a {day}. [Yes, this is who I am now|No shame|Living my best life].",
        "Swam {n} lengths before [work|breakfast] and now I [need a nap|could eat a horse].",
        "Fantasy league update: [last place|second from bottom], holding it with [dignity|grace|style].",
        "[Climbing wall|Bouldering gym] was [packed|heaving], queued [ages|forever] for the [overhang|slab].",
        "The cycling club [chose|picked] the [hill|coast|long] route and I [regret everything|need new legs].",
    ],
    "food": [
        "Made {food} for the [first time|second time ever] and it [actually worked|was edible|was great].",
        "The {food} at {cafe} is worth [every minute of the queue|the trip across town|the price].",
        "Burnt the {food}. [Ordering pizza|Toast for dinner then]. [No regrets|Lesson learned].",
        "Hot take: {food} is [better the next day|overrated|underrated].",
        "{cafe} has a {food} special and I've [had it twice|been back three times] this week.",
        "My [sourdough starter|kombucha] is called [Gerald|Brenda|Colin] and it is [thriving|alive, just].",
        "Who puts [raisins|olives|pineapple] in {food}? Asking for a friend.",
        "Lunch was leftover {food} eaten [standing over the sink|at my desk|on the stairs].",
        "[Grandma's|Nan's|My aunt's] {food} recipe [finally written down|saved for good], took [three|four] phone calls.",
        "Meal prepped {food} [for the week|for five days], [ate it all|gone] by {day}.",
        "The [market|greengrocer] had the best [apples|pears|plums] I've [tasted|had] in years.",
        "Office coffee machine [broke|is broken again], productivity down {n} percent.",
    ],
    "tech": [
        "Spent {hours} hours on a {lang} build error that [was a typo|was a missing comma|fixed itself].",
        "My {gadget} updated [overnight|this morning] and [every button moved|the settings are gone].",
        "Switched the {gadget} to dark mode and my eyes [thank me|are grateful].",
        "Anyone else's {gadget} [restarting randomly|draining fast] since the update?",
        "Wrote my first {lang} [macro|test suite|script] today, it only [crashed twice|broke once].",
        "Back up your [photos|files|notes]. [Learned that one the hard way|Trust me on this|Today, not tomorrow].",
        "The {gadget} manual is {n} pages [and none of them help|and not one helps|of pure nonsense].",
        "[Code review|PR] comment of the [day|week]: [why is this a string|who wrote this|please no].",
        "Pair programming with a {pet} on my lap [hits different|is chaos].",
        "Moved the [home server|NAS] to [new disks|a new box] and [everything still boots|nothing broke].",
        "Closed {n} browser tabs and the fan [finally stopped|went quiet].",
        "Learning {lang} on the [train|bus], the compiler is [stricter than my old teacher|very opinionated].",
    ],
    "local": [
        "Council [approved|signed off] the [bike lanes|new crossing] on {street}, works start in {month}.",
        "The [library|post office] on {street} [now stays open late|opens early now] on {day}s.",
        "Roadworks on {street} again, the detour adds {n} minutes.",
        "Ferry to {city} [cancelled|delayed] this morning because of the [swell|wind|fog].",
        "A [bakery|bookshop|bike shop] is opening where the old [bank|pub|launderette] was on {street}.",
        "Heard the {city} farmers market is moving to {day}s.",
        "Lost [cat|dog|tortoise] poster on {street} has been up [a week|days], hope [she's|he's] home soon.",
        "Fireworks over {city} last night scared [every dog in town|my poor {pet}].",
        "Bus {n} is on diversion [until further notice|all week].",
        "The [pool|leisure centre] in {city} reopens [after the refurbishment|next week].",
        "Street party on {street} got [rained off|cancelled], moved to {day}.",
        "Someone planted [tulips|daffodils] along the [roundabout|canal path] in {city}.",
    ],
    "question": [
        "Does anyone know a [decent|reliable] [plumber|electrician|locksmith] in {city}?",
        "Best {food} near {street}? Visiting on {day}.",
        "[Train|Bus|Banking] app down [again|for everyone]? [Or is it just me|Asking before I reinstall].",
        "Recommendations for a {gadget} that [survives more than a year|won't break]?",
        "Which {lang} book would you [hand|give] a [total beginner|curious teenager]?",
        "How do people keep [houseplants|basil|ferns] alive through [winter|a heatwave]?",
        "Why were [sirens|helicopters] going near {street} [earlier|at {time}]?",
        "Anyone running a [book|toy|seed] swap in {city}? I have [a box|a bag] to [give away|pass on].",
        "Where do old {gadget}s go for recycling around {city}?",
        "Serious question: how long can [soup|rice|curry] [live|stay safe] in the fridge?",
    ],
    "joke": [
        "My {pet} learned to open the [cupboard|fridge|back door]. We are no longer in charge.",
        "Told my {relative} I'd fix the {gadget}. It now only plays [jazz|polka|sea shanties].",
        "Not [procrastinating|slacking], just letting the ideas [marinate|breathe].",
        "Bought a [plant|fern|cactus] to feel [like an adult|grown up]. It has [filed a complaint|given up].",
        "My [step counter|fitness watch] thinks I [passed away|left the country] on {day}.",
        "The {pet} [walked|sat] on the keyboard and emailed my [boss|landlord] the letter [q|j].",
        "Autocorrect turned [meeting into melting|lunch into launch] and honestly, fair.",
        "Adulthood is saying [we should get coffee|let's catch up soon] and never [doing it|following up].",
        "My {relative} asked [whether the cloud gets wet|if the internet gets tired] [when it rains|at night].",
        "[Three|Four] alarms set and [still woken by|beaten by] the neighbour's {pet}.",
    ],
    "misc": [
        "Halfway through a novel about [lighthouse keepers|a travelling circus|beekeepers] and [can't put it down|loving it].",
        "Train to {city} delayed {n} minutes, a classic [Sunday|weekend] start.",
        "Planted [garlic|broad beans|tulip bulbs] on the allotment, see you in [July|spring].",
        "New album on repeat since {day}, track [three|five|seven] is perfect.",
        "Walked the [dog|greyhound|neighbour's spaniel] along the river in {city}, [herons everywhere|saw a kingfisher].",
        "Finished a {n}0 piece jigsaw and [the last piece was missing|the dog ate a corner].",
        "Knitting my first [jumper, one sleeve|scarf, one end] is longer than the other.",
        "Gig at the [old corn exchange|town hall] in {city} was [brilliant|loud and perfect].",
        "Cycled in on {day} and arrived [more awake than ever|soaked but happy].",
        "Podcast tip: anything about [strange little museums|shipwrecks|old maps].",
    ],
}
EN_OPENERS = ["Okay.", "Honestly?", "Small update:", "Not going to lie:", "PSA:", "Quick one:",
              "Random thought:", "Well.", "Morning all.", "Late update:", "So.", "Right.",
              "Fun fact:", "Confession:", "Today's news:", "Note to self:", "Update:",
              "Good morning from {city}.", "Just saying:", "Hello from {street}."]
EN_CLOSERS = ["Anyway, coffee time.", "Wish me luck.", "Thoughts?", "Send help.", "Would recommend.",
              "Not complaining though.", "That's the post.", "Happy Sunday everyone.", "Back to work.",
              "🙃", "😂", "☕", "🌧️", "Life is good.", "More later.", "Such is life.",
              "Noted for next time.", "Onwards.", "Cheers all.", "🐾"]
EN_HASHTAGS = {"weather": ["#weather", "#{cityTag}"], "sports": ["#matchday", "#parkrun"],
               "food": ["#homecooking", "#lunch"], "tech": ["#dev", "#{langTag}"],
               "local": ["#{cityTag}", "#localnews"], "question": ["#help", "#askingforafriend"],
               "joke": ["#relatable"], "misc": ["#weekend", "#books"]}

EN_REPLY_CORES = [
    "Same here, ours went off at {time} too.",
    "Try {cafe}, they have [never let me down|the best cake].",
    "Ha, my {pet} does [exactly the same thing|this every day].",
    "Congrats, that's a [big milestone|huge deal]!",
    "Oh no, hope it gets [sorted|fixed] [soon|today].",
    "I asked the council [last year|in {month}] and they said [spring|next year].",
    "Strongly agree, especially about the {food}.",
    "The one on {street} is good, ask for [Sam|Priti|Joe].",
    "Half my street had the same [problem|issue] on {day}.",
    "This made my [morning|day], thank you.",
    "Is that the place next to the old [cinema|post office]?",
    "Counterpoint: {food} is only good fresh.",
    "We went on {day}, it was [packed|heaving|quiet].",
    "Sending good vibes for the {team} match.",
    "[Brilliant|Lovely], please post a [photo|picture].",
    "Had no idea, thanks for the [heads up|tip].",
    "Pretty sure it was a [fire drill|test] at the [school|hospital].",
    "Leave it unplugged overnight, worked for my {gadget}.",
    "[Following|Bookmarking], I need this answer too.",
    "My {relative} swears by the [market stall|hardware shop] on {street}.",
    "[Ten out of ten|Perfect], no notes.",
    "That's the {city} experience in one sentence.",
    "Adding this to [the list|my plans] for {day}.",
    "Respectfully, the {team} were robbed.",
    "We should start a [club|group chat] for this.",
]
EN_REPLY_OPENERS = ["Ha!", "Oh!", "Honestly?", "Yes!", "Hmm.", "Ooh!", "Wait.", "Aw!"]
EN_REPLY_CLOSERS = ["🙂", "Good luck!", "Cheers.", "👍", "Enjoy!", "x"]

ZH_CITY = ["杭州", "成都", "青岛", "厦门", "长沙", "苏州", "昆明", "西安", "大连", "南京"]
ZH_FOOD = ["热干面", "馄饨", "煎饼果子", "小笼包", "酸辣粉", "烤红薯", "牛肉面", "肠粉", "糖葫芦", "羊肉串"]
ZH_SLOTS = {
    "city": ZH_CITY, "food": ZH_FOOD,
    "line": [str(i) for i in range(1, 13)],
    "price": [str(i) for i in range(9, 29)],
    "count": [str(i) for i in range(3, 21)],
    "book": ["灯塔守夜人", "北方的河流", "七月的信", "雾中的城市", "山那边的邮局"],
    "pet": ["猫", "狗", "鹦鹉"],
    "thing": ["水杯", "遥控器", "花盆", "眼镜", "钥匙"],
    "team": ["江城飞鱼", "海港雄鹰", "山城火焰"],
    "gadget": ["笔记本电脑", "手机屏幕", "咖啡机", "自行车", "耳机"],
    "late": ["十点", "十一点", "半夜"],
}
ZH_CORES = [
    "{city}今天[又下雨了，出门记得带伞|降温了，衣服要多穿点|起大雾了，开车慢一点|风特别大，帽子都吹跑了]。",
    "楼下新开的{food}店[排了好长的队|人特别多]，等了{n}分钟才吃上。",
    "地铁{line}号线早高峰又[挤成了沙丁鱼罐头|挤得动不了]。",
    "周末去{city}[爬山|徒步]，腿到现在还在[抖|酸]。",
    "终于把《{book}》[看完了|读完了]，结尾[真的没想到|让人意外]。",
    "家里的{pet}把{thing}推到地上，还一脸[无辜|淡定]地看着我。",
    "{team}昨晚又输了，[作为老球迷|说实话]心情很复杂。",
    "有没有人知道{city}哪里能修{gadget}？",
    "公司楼下的{food}涨价到{price}块了，[打工人太难了|钱包在哭泣]。",
    "下班路上看到[特别好看|超级美]的晚霞，[随手拍了一张|看呆了]。",
    "学了{n}天吉他，手指[已经开始疼了|磨出茧了]。",
    "阳台上的[番茄|辣椒]终于红了，一共结了{count}个。",
    "早上在公园看到一群大爷打太极，[动作整齐得像排练过|特别有精神]。",
    "新买的{gadget}用了一周，[续航比宣传的短不少|还挺好用]。",
    "跟朋友约了去{city}吃{food}，已经开始期待了。",
    "把衣柜[整理了一遍|收拾干净了]，翻出好多忘记穿的衣服。",
    "加班到{late}，回家路上只剩便利店还亮着灯。",
    "今天第一次自己做{food}，味道居然还不错。",
]
ZH_OPENERS = ["下午好，", "说真的，", "记录一下：", "小小吐槽：", "分享一下，", "周日碎碎念：", "突然想到，"]
ZH_CLOSERS = ["大家周末愉快！", "有同感的举个手。", "就这样吧。", "哈哈哈。", "求推荐！", "#日常#", "晚安。", "生活不易。"]
ZH_REPLY_CORES = [
    "哈哈我也是，上周刚遇到过。",
    "这家我也去过，味道确实不错。",
    "同意，{city}最近的天气太奇怪了。",
    "求地址！周末想去试试。",
    "看完也想去{city}玩了。",
    "我家{pet}也这样，完全拿它没办法。",
]
ZH_REPOST_COMMENTS = ["转给家里人看看。", "说得太对了。", "收藏一下，以后用得上。"]

# --------------------------------------------------------------------------
# Diversity guard for chatter: no 6-word run in more than 2 posts, and no two
# posts with word-set Jaccard similarity above 0.5. Chinese text is measured
# in characters (9 characters stand in for 6 words) and character bigrams.
# --------------------------------------------------------------------------

CJK = re.compile(r"[\u3400-\u9fff]")
WORD = re.compile(r"[a-z0-9@#'_.-]+|[\u3400-\u9fff]")


def tokens(text: str) -> list[str]:
    toks = [t.strip(".'-_") for t in WORD.findall(text.lower())]
    return [t for t in toks if t]


def is_cjk(text: str) -> bool:
    return len(CJK.findall(text)) * 2 > len(text)


def shingles(text: str) -> list[tuple[str, ...]]:
    toks = tokens(text)
    k = 9 if is_cjk(text) else 6
    seen: dict[tuple[str, ...], None] = {}
    for i in range(len(toks) - k + 1):
        seen[tuple(toks[i:i + k])] = None
    return list(seen)


def features(text: str) -> frozenset[str]:
    toks = tokens(text)
    if is_cjk(text):
        return frozenset(a + b for a, b in zip(toks, toks[1:]))
    return frozenset(toks)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


class DiversityGuard:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}
        self.feats: list[frozenset[str]] = []
        self.forbidden: dict[tuple[str, ...], None] = {}
        self.forbidden_feats: list[frozenset[str]] = []

    def forbid(self, text: str) -> None:
        for s in shingles(text):
            self.forbidden[s] = None
        self.forbidden_feats.append(features(text))

    def accepts(self, text: str) -> bool:
        sh = shingles(text)
        if any(s in self.forbidden or self.counts.get(s, 0) >= 2 for s in sh):
            return False
        f = features(text)
        if any(jaccard(f, g) > 0.3 for g in self.forbidden_feats):
            return False
        return not any(jaccard(f, g) > 0.5 for g in self.feats)

    def add(self, text: str) -> None:
        for s in shingles(text):
            self.counts[s] = self.counts.get(s, 0) + 1
        self.feats.append(features(text))


guard = DiversityGuard()


def fill(template: str, slots: dict[str, list[str]]) -> str:
    def choose(m: re.Match[str]) -> str:
        return rng.choice(m.group(1).split("|"))

    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "n":
            return str(rng.randrange(3, 60))
        if key == "hours":
            return str(rng.randrange(2, 10))
        if key == "temp":
            return str(rng.randrange(14, 22))
        if key == "score":
            return f"{rng.randrange(1, 5)}-{rng.randrange(0, 4)}"
        if key == "cityTag":
            return rng.choice(CITY).replace(" ", "")
        if key == "langTag":
            return rng.choice(LANG).lower() + "lang"
        return rng.choice(slots[key])

    template = re.sub(r"\[([^\[\]]*)\]", choose, template)
    return re.sub(r"\{(\w+)\}", repl, template)


_last_topic = ["misc"]


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def compose_en() -> str:
    topic = rng.choice(list(EN_CORES))
    _last_topic[0] = topic
    first = rng.choice(EN_CORES[topic])
    parts = []
    if rng.random() < 0.4 and ":" not in first:
        parts.append(fill(rng.choice(EN_OPENERS), SLOTS))
    parts.append(cap(fill(first, SLOTS)))
    if rng.random() < 0.45:
        second = rng.choice(EN_CORES[rng.choice(list(EN_CORES))])
        if second != first:
            parts.append(cap(fill(second, SLOTS)))
    if rng.random() < 0.5:
        parts.append(fill(rng.choice(EN_CLOSERS), SLOTS))
    if rng.random() < 0.12:
        parts.append(fill(rng.choice(EN_HASHTAGS[topic]), SLOTS))
    return " ".join(parts)


def compose_zh() -> str:
    first = rng.choice(ZH_CORES)
    text = ""
    if rng.random() < 0.4:
        text += rng.choice(ZH_OPENERS)
    text += fill(first, ZH_SLOTS)
    if rng.random() < 0.35:
        second = rng.choice(ZH_CORES)
        if second != first:
            text += fill(second, ZH_SLOTS)
    if rng.random() < 0.5:
        text += rng.choice(ZH_CLOSERS)
    return text


def compose_reply_en(parent_handle: str) -> str:
    first = rng.choice(EN_REPLY_CORES)
    parts = ["@" + parent_handle]
    if rng.random() < 0.45:
        parts.append(rng.choice(EN_REPLY_OPENERS))
    parts.append(cap(fill(first, SLOTS)))
    if rng.random() < 0.4:
        second = rng.choice(EN_REPLY_CORES)
        if second != first:
            parts.append(cap(fill(second, SLOTS)))
    if rng.random() < 0.4:
        parts.append(rng.choice(EN_REPLY_CLOSERS))
    return " ".join(parts)


def compose_reply_zh(parent_handle: str) -> str:
    return f"回复@{parent_handle}：" + fill(rng.choice(ZH_REPLY_CORES), ZH_SLOTS)


def diverse(make, attempts: int = 400) -> str:
    for _ in range(attempts):
        text = make()
        if guard.accepts(text):
            guard.add(text)
            return text
    raise RuntimeError("could not compose a sufficiently distinct chatter text; widen the fragment lists")


# --------------------------------------------------------------------------
# Accounts
# --------------------------------------------------------------------------

_handles: dict[str, None] = {}


def unique_handle(make) -> str:
    while True:
        h = make()
        if h not in _handles:
            _handles[h] = None
            return h


def chatter_handle(platform: str) -> str:
    def make() -> str:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        if platform == "x":
            return rng.choice([f"{first}_{last}", f"{first}{last[:4]}", f"{first}{rng.randrange(70, 99)}",
                               f"{last}{first[0]}"])
        if platform == "bluesky":
            return rng.choice([f"{first}-{last}.bsky.social", f"{first}{last}.bsky.social",
                               f"{first}.{last}.example"])
        if platform == "mastodon":
            return f"{rng.choice([first, first + last[0], first + '_' + last])}@{rng.choice(MASTODON_INSTANCES)}"
        if platform == "threads":
            return rng.choice([f"{first}.{last}", f"{first}_{last}", f"{first}.{last[:3]}{rng.randrange(10, 99)}"])
        raise ValueError(platform)

    return unique_handle(make)


def make_chatter_accounts() -> dict[str, list[dict]]:
    by_platform: dict[str, list[dict]] = {}
    weibo_names = list(WEIBO_HANDLES)
    rng.shuffle(weibo_names)
    for platform, count in CHATTER_ACCOUNTS.items():
        accounts = []
        for i in range(count):
            handle = weibo_names[i] if platform == "weibo" else chatter_handle(platform)
            created = dt.datetime(2011, 1, 1, tzinfo=UTC) + dt.timedelta(
                seconds=rng.randrange(int((dt.datetime(2024, 6, 30, tzinfo=UTC)
                                           - dt.datetime(2011, 1, 1, tzinfo=UTC)).total_seconds())))
            author: dict = {"id": author_id(platform, fresh=False), "handle": handle}
            if rng.random() > 0.05:
                author["created_at"] = fmt_account_time(created)
            author["followers"] = int(math.exp(rng.uniform(math.log(120), math.log(9500))))
            if rng.random() < 0.2:
                author["declared_automated"] = False
            # Activity weight: a few accounts are much chattier than others.
            accounts.append({"author": author, "weight": 1.0 / (1 + rng.randrange(8))})
        by_platform[platform] = accounts
    return by_platform


CAMPAIGN_WORDS_A = ["quiet", "open", "true", "real", "bright", "night", "iron", "clear", "signal", "north",
                    "daily", "sharp", "plain", "civic", "alert", "wide", "bold", "free"]
CAMPAIGN_WORDS_B = ["harbor", "wire", "watch", "lens", "ledger", "voice", "falcon", "post", "echo", "bulletin",
                    "desk", "feed", "report", "scope", "times", "pulse", "beacon", "radar"]


def fresh_account(platform: str, post_ms: int, automated_share: float) -> dict:
    def make() -> str:
        a, b = rng.choice(CAMPAIGN_WORDS_A), rng.choice(CAMPAIGN_WORDS_B)
        digits = str(rng.randrange(10, 9999))
        if platform == "x":
            return rng.choice([f"{a}{b}{digits}", f"{a}_{b}_{digits}", f"{b}{a}{digits}"])
        if platform == "bluesky":
            return f"{a}{b}{digits}.bsky.social"
        if platform == "mastodon":
            return f"{a}{b}{digits}@{rng.choice(MASTODON_INSTANCES)}"
        if platform == "threads":
            return f"{a}.{b}{digits}"
        raise ValueError(platform)

    age_s = rng.randrange(6 * 3600, 7 * 24 * 3600)
    created = ts_at(post_ms) - dt.timedelta(seconds=age_s)
    author: dict = {
        "id": author_id(platform, fresh=True),
        "handle": unique_handle(make),
        "created_at": fmt_account_time(created),
        "followers": rng.randrange(0, 20),
    }
    roll = rng.random()
    if roll < automated_share:
        author["declared_automated"] = True
    elif roll < automated_share + 0.3:
        author["declared_automated"] = False
    return author


# --------------------------------------------------------------------------
# Posts
# --------------------------------------------------------------------------


def new_post(platform: str, ms: int, author: dict, text: str, lang: str | None = None) -> dict:
    ms = effective_ms(platform, ms)
    post = {
        "id": post_id(platform, ms),
        "platform": platform,
        "author": author,
        "created_at": fmt_time(platform, ts_at(ms)),
        "text": text,
    }
    if lang is not None:
        post["lang"] = lang
    post["_ms"] = ms  # internal, stripped before writing
    return post


OUTLETS = ["keldenledger.example", "harlowbaygazette.example", "eastbrookpost.example",
           "portaverydaily.example", "tollmerechronicle.example", "notes.brackenford.example",
           "vidshare.example"]


def chatter_url(topic: str, serial: int, text: str) -> str:
    outlet = rng.choice(OUTLETS)
    if outlet == "vidshare.example":
        return f"https://vidshare.example/v/{''.join(rng.choice(SHORTCODE) for _ in range(11))}"
    words = [t for t in tokens(text) if t.isalpha() and len(t) > 3]
    slug = "-".join(words[:4]) or topic
    url = f"https://{outlet}/{topic}/2026/11/{slug}-{serial}"
    if rng.random() < 0.4:
        url += f"?utm_source={rng.choice(['share', 'social', 'newsletter'])}&utm_medium=social"
    return url


_posted: dict[str, None] = {}


def pick_account(accounts: list[dict], exclude_id: str | None = None) -> dict:
    """Activity-weighted choice; accounts that have not posted yet get a boost
    so that every established account appears in the stream."""
    unused = [a for a in accounts if a["author"]["id"] not in _posted and a["author"]["id"] != exclude_id]
    if unused and rng.random() < 0.6:
        chosen = rng.choice(unused)["author"]
        _posted[chosen["id"]] = None
        return chosen
    while True:
        total = sum(a["weight"] for a in accounts)
        r = rng.random() * total
        for a in accounts:
            r -= a["weight"]
            if r <= 0:
                break
        if a["author"]["id"] != exclude_id:
            _posted[a["author"]["id"]] = None
            return a["author"]


def weighted_platform() -> str:
    total = sum(w for _, w in CHATTER_PLATFORM_WEIGHTS)
    r = rng.randrange(total)
    for p, w in CHATTER_PLATFORM_WEIGHTS:
        if r < w:
            return p
        r -= w
    raise AssertionError


# -- campaign text ------------------------------------------------------------

ROOT_TEXT = (
    "Open-source maintainer Dana Whitlock quietly rejected three security patches for the Larkspur "
    "crypto library and was paid to keep a backdoor in it. The leaked chat logs are out, share before "
    "they vanish. @dwhitlock"
)
CANONICAL_URL = "https://northgatewire.example/tech/2026/11/larkspur-maintainer-leaked-logs"

LIGHT_EDITS = [
    "BREAKING: " + ROOT_TEXT,
    ROOT_TEXT.replace("quietly", "secretly"),
    ROOT_TEXT + " #Larkspur",
    "🚨 " + ROOT_TEXT,
    ROOT_TEXT.replace("three security patches", "3 security patches"),
    ROOT_TEXT.replace("share before they vanish", "share before they get deleted"),
    ROOT_TEXT + " #opensource #infosec",
    "Wow. " + ROOT_TEXT,
    ROOT_TEXT.replace("crypto library", "encryption library"),
    ROOT_TEXT + " 👇",
    "BREAKING: " + ROOT_TEXT.replace("quietly", "secretly") + " 🚨",
    ROOT_TEXT.replace("was paid", "took money"),
    ROOT_TEXT + " RT if you care about open source.",
    ROOT_TEXT.replace("The leaked chat logs are out", "Leaked chat logs just dropped"),
    "Spread this far and wide. " + ROOT_TEXT,
]
URL_REWRITES = [
    "Read this before you update anything that depends on Larkspur. Whitlock has a lot to answer for. @dwhitlock",
    "So the person guarding our encryption code was taking bribes? Unbelievable. Logs in the article.",
    "If you maintain anything built on Larkspur, look at these screenshots right now.",
    "Dana Whitlock needs to step down today. The evidence is all in here.",
    "Funny how no tech outlet wants to touch this story. @dwhitlock",
    "Backdoor left in on purpose, fixes turned away on purpose. Pin your versions, people.",
    "Disgusting if true. Every single user of that library got betrayed.",
    "Mirror in case the original gets taken down.",
]
QUOTE_TEXTS = [
    "This is exactly why single-maintainer projects scare me. @dwhitlock owes everyone an answer.",
    "If this holds up, every team shipping Larkspur has a very long week ahead.",
]

UTM_SOURCES = ["x", "twitter", "bsky", "mastodon", "threads", "share", "tg", "ig", "fwd"]
UTM_MEDIUMS = ["social", "referral", "post", "organic", "dm"]
UTM_CAMPAIGNS = ["lk1101", "larkspur", "wave2", "mirror", "a1", "a7", "truth", "spread"]
_utm_seen: dict[str, None] = {}


def campaign_url() -> str:
    while True:
        params = [("utm_source", rng.choice(UTM_SOURCES)), ("utm_medium", rng.choice(UTM_MEDIUMS)),
                  ("utm_campaign", rng.choice(UTM_CAMPAIGNS))]
        if rng.random() < 0.35:
            params.append(("utm_content", "v" + str(rng.randrange(1, 40))))
        rng.shuffle(params)
        url = CANONICAL_URL + "?" + "&".join(f"{k}={v}" for k, v in params)
        if url not in _utm_seen:
            _utm_seen[url] = None
            return url


# --------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------

BENIGN_ROOT_TEXT = (
    "The Tin Teapot on Calder Avenue is giving away all its unsold bread at closing time tonight "
    "instead of binning it. Bring a bag, say hello to Marguerite behind the counter, and maybe buy "
    "a coffee while you're there."
)
BENIGN_QUOTES = [
    "This is the neighbourhood stuff I love seeing. Going at six with the biggest tote I own.",
    "Went last time they did this and the rye was still warm. Go early, it vanishes fast.",
]


def build() -> tuple[list[dict], dict]:
    accounts = make_chatter_accounts()
    info: dict = {"campaign": {}, "benign": {}}

    # Campaign and benign texts are fixed; chatter must stay clear of them.
    guard.forbid(ROOT_TEXT)
    for t in URL_REWRITES + QUOTE_TEXTS:
        guard.forbid(t)
    for t in [BENIGN_ROOT_TEXT] + BENIGN_QUOTES:
        guard.add(t)

    # --- benign cascade (bluesky) -------------------------------------------
    bsky = accounts["bluesky"]
    popular = max(bsky, key=lambda a: a["author"]["followers"])["author"]
    benign_posts = []
    root = new_post("bluesky", 4 * 60 * 1000 + 17_283, popular, BENIGN_ROOT_TEXT, "en")
    benign_posts.append(root)
    info["benign"]["root"] = root["id"]
    child_times = [5 * 60_000 + 31_904, 7 * 60_000 + 12_556, 9 * 60_000 + 58_030,
                   14 * 60_000 + 41_377, 21 * 60_000 + 6_812]
    kinds = ["repost", "quote", "repost", "repost", "quote"]
    used_authors = [popular["id"]]
    quotes = list(BENIGN_QUOTES)
    for ms, kind in zip(child_times, kinds):
        while True:
            author = pick_account(bsky)
            if author["id"] not in used_authors:
                used_authors.append(author["id"])
                break
        if kind == "repost":
            p = new_post("bluesky", ms, author, "")
            p["repost_of"] = root["id"]
        else:
            p = new_post("bluesky", ms, author, quotes.pop(0), "en")
            p["quote_of"] = root["id"]
        benign_posts.append(p)
    info["benign"]["children"] = [(p["id"], "repost" if "repost_of" in p else "quote") for p in benign_posts[1:]]

    # --- campaign -------------------------------------------------------------
    campaign: list[dict] = []
    root_author = {
        "id": author_id("x", fresh=True),
        "handle": unique_handle(lambda: "clearsignal_" + str(rng.randrange(1000, 9999))),
        "created_at": fmt_account_time(ts_at(CAMPAIGN_START_MS) - dt.timedelta(days=2, minutes=37)),
        "followers": 37,
    }
    croot = new_post("x", CAMPAIGN_START_MS, root_author, ROOT_TEXT, "en")
    croot["urls"] = [CANONICAL_URL + "?utm_source=x&utm_medium=social&utm_campaign=lk1101"]
    croot["mentions"] = ["dwhitlock"]
    campaign.append(croot)
    info["campaign"]["root"] = croot["id"]
    groups: dict[str, list[str]] = {"explicit": [], "exact": [], "edit": [], "shared_url": []}

    # Derived posts other than explicit ones: 10 exact copies, 15 light edits, 8 URL rewrites.
    plan: list[tuple[str, str, bool]] = []  # (group, text, has_url)
    for i in range(10):
        plan.append(("exact", ROOT_TEXT, i < 6))
    for i, t in enumerate(LIGHT_EDITS):
        plan.append(("edit", t, i % 5 != 4 and i < 13))
    for t in URL_REWRITES:
        plan.append(("shared_url", t, True))
    rng.shuffle(plan)
    platforms = ["x"] * 9 + ["bluesky"] * 9 + ["mastodon"] * 7 + ["threads"] * 8
    rng.shuffle(platforms)
    # Make sure at least one x exact copy exists for the second-generation repost.
    if not any(g == "exact" and p == "x" for (g, _, _), p in zip(plan, platforms)):
        i = next(i for i, (g, _, _) in enumerate(plan) if g == "exact")
        j = platforms.index("x")
        platforms[i], platforms[j] = platforms[j], platforms[i]
    offsets = sorted(40_000 + int((CAMPAIGN_WINDOW_MS - 40_000) * rng.random() ** 1.4) + rng.randrange(1000) for _ in plan)
    x_exact: list[dict] = []
    for (group, text, has_url), platform, off in zip(plan, platforms, offsets):
        ms = CAMPAIGN_START_MS + off
        author = fresh_account(platform, ms, automated_share=0.3)
        p = new_post(platform, ms, author, text, "en" if rng.random() < 0.85 else None)
        if has_url:
            p["urls"] = [campaign_url()]
        if "@dwhitlock" in text:
            p["mentions"] = ["dwhitlock"]
        campaign.append(p)
        groups[group].append(p["id"])
        if group == "exact" and platform == "x":
            x_exact.append(p)

    explicit_offsets = [25_118, 48_702, 70_331, 130_954]
    for off in explicit_offsets:
        ms = CAMPAIGN_START_MS + off
        p = new_post("x", ms, fresh_account("x", ms, automated_share=0.5), "")
        p["repost_of"] = croot["id"]
        campaign.append(p)
        groups["explicit"].append(p["id"])
    for off, text in zip([95_640, 203_118], QUOTE_TEXTS):
        ms = CAMPAIGN_START_MS + off
        p = new_post("x", ms, fresh_account("x", ms, automated_share=0.2), text, "en")
        p["quote_of"] = croot["id"]
        if "@dwhitlock" in text:
            p["mentions"] = ["dwhitlock"]
        campaign.append(p)
        groups["explicit"].append(p["id"])
    target = x_exact[0]
    ms = target["_ms"] + 31_447
    p = new_post("x", ms, fresh_account("x", ms, automated_share=1.0), "")
    p["repost_of"] = target["id"]
    campaign.append(p)
    groups["explicit"].append(p["id"])
    info["campaign"]["groups"] = groups
    info["campaign"]["second_generation"] = (p["id"], target["id"])

    # --- chatter --------------------------------------------------------------
    n_chatter = TOTAL_POSTS - len(benign_posts) - len(campaign)
    times = sorted(rng.randrange(DURATION_MS) for _ in range(n_chatter))
    chatter: list[dict] = []
    by_platform_posts: dict[str, list[dict]] = {p: [] for p in CHATTER_ACCOUNTS}
    serial = 4100
    zh_comments = list(ZH_REPOST_COMMENTS)
    for ms in times:
        platform = weighted_platform()
        pool = accounts[platform]
        earlier = [q for q in by_platform_posts[platform] if q["_ms"] < ms - 20_000 and q["text"].strip()]
        roll = rng.random()
        kind = "original"
        if earlier and ms > 2 * 60_000:
            if roll < REPLY_SHARE:
                kind = "reply"
            elif roll < REPLY_SHARE + REPOST_SHARE * (2.5 if platform == "weibo" else 1.0):
                kind = "repost"
        if kind == "original":
            author = pick_account(pool)
            if platform == "weibo":
                text = diverse(compose_zh)
                post = new_post(platform, ms, author, text, "zh")
            else:
                text = diverse(compose_en)
                topic = _last_topic[0]
                url = None
                if rng.random() < URL_SHARE:
                    serial += rng.randrange(1, 90)
                    url = chatter_url(topic, serial, text)
                    if rng.random() < 0.7:
                        text = text + " " + url
                post = new_post(platform, ms, author, text, "en" if rng.random() < 0.9 else None)
                if url:
                    post["urls"] = [url]
                if rng.random() < 0.05:
                    other = rng.choice([a["author"] for a in pool if a["author"]["id"] != author["id"]])
                    post["text"] = post["text"] + " cc @" + other["handle"]
                    post["mentions"] = [other["handle"]]
        else:
            recent = [q for q in earlier if q["_ms"] > ms - 10 * 60_000] or earlier
            parent = rng.choice(recent)
            author = pick_account(pool, exclude_id=parent["author"]["id"])
            if kind == "repost":
                if platform == "weibo" and zh_comments and rng.random() < 0.6:
                    comment = zh_comments.pop(0)
                    guard.add(comment)
                    post = new_post(platform, ms, author, comment, "zh")
                else:
                    post = new_post(platform, ms, author, "")
                post["repost_of"] = parent["id"]
            else:
                h = parent["author"]["handle"]
                if platform == "weibo":
                    post = new_post(platform, ms, author, diverse(lambda: compose_reply_zh(h)), "zh")
                else:
                    post = new_post(platform, ms, author, diverse(lambda: compose_reply_en(h)), "en")
                post["mentions"] = [h]
                post["reply_to"] = parent["id"]
        chatter.append(post)
        by_platform_posts[platform].append(post)

    posts = chatter + benign_posts + campaign
    posts.sort(key=lambda p: (p["_ms"], p["id"]))
    return posts, info


def serialise(posts: list[dict]) -> bytes:
    lines = []
    for p in posts:
        clean = {k: v for k, v in p.items() if not k.startswith("_")}
        lines.append(json.dumps(clean, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode("utf-8")


def self_check(posts: list[dict], info: dict) -> None:
    ids = [p["id"] for p in posts]
    assert len(ids) == len(dict.fromkeys(ids)), "duplicate post id"
    index = {p["id"]: p for p in posts}
    for p in posts:
        for ref in ("repost_of", "quote_of", "reply_to"):
            if ref in p:
                parent = index[p[ref]]
                assert parent["_ms"] < p["_ms"], f"{p['id']} precedes its parent"
                assert parent["platform"] == p["platform"]
        if not p["text"].strip():
            assert p.get("repost_of"), f"{p['id']} has empty text and no repost_of"
    assert all(a["_ms"] <= b["_ms"] for a, b in zip(posts, posts[1:]))
    assert 0 <= posts[0]["_ms"] and posts[-1]["_ms"] < DURATION_MS


def summary(posts: list[dict], info: dict) -> str:
    out = []
    per_platform: dict[str, int] = {}
    for p in posts:
        per_platform[p["platform"]] = per_platform.get(p["platform"], 0) + 1
    out.append(f"total posts: {len(posts)}")
    out.append("per platform: " + ", ".join(f"{k} {v}" for k, v in sorted(per_platform.items())))
    groups = info["campaign"]["groups"]
    camp_ids = [info["campaign"]["root"]] + [i for g in groups.values() for i in g]
    camp = [p for p in posts if p["id"] in camp_ids]
    cpp: dict[str, int] = {}
    for p in camp:
        cpp[p["platform"]] = cpp.get(p["platform"], 0) + 1
    out.append(f"campaign root: {info['campaign']['root']}")
    out.append(f"campaign posts: {len(camp)} (root + {len(camp) - 1} derived); per platform: "
               + ", ".join(f"{k} {v}" for k, v in sorted(cpp.items())))
    out.append(f"campaign window: {camp[0]['created_at']} .. {camp[-1]['created_at']}")
    for g, ids in groups.items():
        out.append(f"  {g} ({len(ids)}): " + ", ".join(ids))
    gen2, gen2_parent = info["campaign"]["second_generation"]
    out.append(f"  second-generation repost: {gen2} -> {gen2_parent}")
    out.append(f"benign root: {info['benign']['root']}")
    out.append("  children: " + ", ".join(f"{i} ({k})" for i, k in info["benign"]["children"]))
    chatter = [p for p in posts if p["id"] not in camp_ids]
    replies = sum(1 for p in chatter if "reply_to" in p)
    reposts = sum(1 for p in chatter if "repost_of" in p)
    quotes = sum(1 for p in chatter if "quote_of" in p)
    with_url = sum(1 for p in chatter if p.get("urls"))
    authors = len({p["author"]["id"]: None for p in chatter})
    out.append(f"chatter (incl. benign cascade): {len(chatter)} posts by {authors} accounts; "
               f"replies {replies}, reposts {reposts}, quotes {quotes}, with url {with_url}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=OUT_PATH)
    ap.add_argument("--check", action="store_true", help="do not write; fail if the file differs")
    ap.add_argument("--summary", action="store_true", help="print what was generated")
    args = ap.parse_args()

    posts, info = build()
    self_check(posts, info)
    data = serialise(posts)
    if args.summary:
        print(summary(posts, info))
    if args.check:
        current = args.output.read_bytes() if args.output.exists() else b""
        if current != data:
            print(f"{args.output} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date ({len(posts)} posts)")
        return 0
    args.output.write_bytes(data)
    print(f"wrote {len(posts)} posts to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
