#!/usr/bin/env python3
"""Generate the echotrace demo stream, services/echotrace/demo/sample.jsonl.

Standard library only and fully deterministic: two random.Random streams with
fixed seeds drive every choice (one for the structure of the stream, one for the
wording of the chatter), nothing iterates over a set or depends on the hash
seed, so running the script twice writes identical bytes.

What the stream holds (see README.md beside this file):

* background chatter from 150 established accounts on x, bluesky, mastodon,
  threads and weibo: everyday posts, each written from its own sentence base
  (no two chatter texts have a word-set Jaccard similarity of 0.3 or more),
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
    python3 generate_sample.py --check    # exits 1 if sample.jsonl is stale or its
                                          # chatter texts are too similar
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
# Chatter posts per platform (originals, replies and reposts; the benign cascade
# and the campaign come on top). They add up to TOTAL_POSTS - 6 - 46.
CHATTER_POSTS = {"x": 166, "bluesky": 97, "mastodon": 62, "threads": 84, "weibo": 39}
REPLY_SHARE = 0.07
REPOST_SHARE = 0.05
URL_SHARE = 0.15
CAMPAIGN_START_MS = 10 * 60 * 1000 + 2417  # 09:10:02.417
CAMPAIGN_WINDOW_MS = 8 * 60 * 1000

OUT_PATH = Path(__file__).resolve().parent / "sample.jsonl"
UTC = dt.timezone.utc
CST = dt.timezone(dt.timedelta(hours=8))

rng = random.Random(SEED)
# The wording of the chatter (which sentence base, hashtags, emoji, links) draws
# from its own stream, so editing the sentence lists leaves the structure of the
# sample (times, platforms, accounts, replies, reposts) as it is.
text_rng = random.Random(SEED + 1)

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

# Sentence bases for the background chatter (all invented). Each is a complete
# post of its own and is used at most once, so no two chatter posts share a
# template; see the diversity rules below.
EN_BASES = {
    'weather': [
        'Third straight day of drizzle in Harlow Bay and the gulls look as fed up as everyone else.',
        'Scraped a thin layer of frost off the windscreen with a library card because the proper scraper is missing.',
        'Eighteen degrees and bright sunshine in Port Avery, which feels frankly suspicious for November.',
        'Fog so thick over Kelden that the church spire has vanished completely.',
        'Our recycling bin blew over at midnight and Fenwick Street is now decorated with cereal boxes.',
        'Forecast promised sunny intervals. Reader, it poured for two solid hours.',
        'Ten minutes of hail, then clear blue skies, then hail again. Greywater weather never commits.',
        'My brand new umbrella turned inside out on Station Hill after exactly one outing.',
        'Somehow colder at lunch than it was at dawn, which breaks every rule I learned at school.',
        'First crisp morning of the season, so the wool scarf comes out of storage today.',
        'A double rainbow appeared over Bellamy Square and the whole bus queue stopped scrolling to stare.',
        "Power flickered twice during last night's storm, so candles and matches now live on the kitchen table.",
        'The river at Brackenford has crept right up to the footpath after all this rain.',
        'Wet leaves on Larch Crescent are basically an ice rink for cyclists today, go slowly.',
        'Sun came out just as I finished hanging washing indoors, naturally.',
        'Windows steamed up so badly on the tram that nobody could tell which stop was coming.',
        'Thunder rolled across Ashcombe around dawn and both kids ended up in our bed.',
        'Puddle outside the corner shop is now deep enough to have its own ducks.',
        'Gorgeous pink sky over Summerleigh harbour tonight, photos never do it justice.',
        'Wrapped up in three layers for a walk and came back sweating, November has no idea what it wants.',
        'Storm warning for the coast tomorrow, so the garden furniture is coming inside tonight.',
        'Hilltop mist burned off by ten and suddenly Marrowfield looked like a postcard.',
        'Snow flurries for about ninety seconds, enough for my daughter to declare a snow day.',
        'Damp socks, damp coat, damp spirit. Tollmere drizzle wins again.',
        'Walked the seafront at Port Avery and the wind nearly took my hat into the sea.',
        'Tide came over the harbour wall at high water, sandbags already out by the chippy.',
        "Crunchy frost on the playing fields made the dog's morning zoomies extra dramatic.",
        'Weather app says zero percent chance of rain while rain hammers on my skylight.',
        'Why is it always sunny on weekdays and grey the minute Saturday arrives?',
        'The sky over Eastbrook turned a weird yellow before that downpour, anybody else notice?',
        'Gritters were out on Quayside Road last night, so someone expects ice.',
        'Heatwave in spring, sleet in autumn, and a lovely mild Christmas forecast apparently.',
        'Hung a thermometer outside the kitchen window and checking it has become my newest hobby.',
        "Felt the first proper chill biting my ears while cycling across Tanner's Bridge.",
        'Rain so heavy that the gutter became a waterfall right above our front step.',
        'Pale winter light through the trees in Kelden woods this afternoon was unreal.',
        'Wind turbines on the ridge are spinning faster than I have ever seen them.',
        "Kids built a dam across the flooded lane and honestly it held up better than the council's drains.",
        'Sunset at four thirty already. Officially the dark season now.',
        'Woke at five to the loudest gale rattling every window frame in our flat.',
        'Balmy enough for outdoor coffee on Orchard Row, enjoying it while it lasts.',
        'Clouds rolling in off the estuary like a slow grey blanket, rain by teatime surely.',
        'Icicles hanging from the bus shelter on Mill Lane, kids keep snapping them off.',
        'Dry spell ended dramatically with one enormous thunderclap over Greywater.',
        'Sea fret came in so fast at Summerleigh beach that the lifeguard hut disappeared within minutes.',
        'Just defrosted the car and immediately it started snowing again, excellent timing everyone.',
        'Weekend looks windy but dry, ideal for finally raking those leaves.',
        'Muddy boots lined up in the hallway like soldiers after a drenched family hike.',
        'Sunlight glinting off wet slate roofs across Ashcombe makes the town almost sparkle.',
        'Heard the ferry horn through thick fog all night, strangely comforting sound.',
        'Lightning lit up the whole valley behind Marrowfield like somebody flicking a switch.',
        'Rain jacket finally gave up its waterproofing after eight winters of loyal service.',
        'Frozen birdbath this morning, so I poured warm water in and the blackbirds arrived instantly.',
        'Breezy autumn afternoon, perfect kite weather on the downs above Tollmere.',
        'Leaves turned from green to gold practically overnight on our street maple.',
    ],
    'sports': [
        'The Comets won four-one last night and my voice has not recovered yet.',
        'Whoever refereed the Herons match owes the whole stand an explanation for that penalty.',
        'Late equaliser from the Rovers and the flat downstairs heard every single syllable of my celebration.',
        'The Foxes desperately need a new goalkeeper, I am saying it loudly and proudly.',
        'Got two tickets for the Mariners on Saturday, first live match since spring.',
        'Parkrun this morning, shaved nineteen seconds off my best time thanks to a tailwind.',
        'Youth hockey practice in freezing mud builds character, mostly for the parents holding umbrellas.',
        'Watching darts at eleven on a Tuesday night. Yes, this is my life now.',
        'Swam forty lengths before work and could now eat an entire loaf.',
        'Fantasy league update: rock bottom, defending that position with tremendous dignity.',
        'Bouldering gym was heaving tonight, queued forever just to fall off the same overhang.',
        'Cycling club voted for the hilly route and my thighs are filing a formal complaint.',
        'Owls fans singing in the rain outside the stadium gates is peak November football.',
        'Signed up for a half marathon in April, somebody please remind me why.',
        "Kestrels lost again on penalties. Four seasons running now, it's almost a tradition.",
        'My son scored his first ever goal and then celebrated by lying face down in the mud.',
        'Rowing crew went out at dawn on the estuary, water like glass, arms like jelly.',
        'Netball league final tonight at the Ashcombe sports hall, come and cheer loudly.',
        'Bought proper running shoes after years of trainers and my knees feel brand new.',
        'Tried a spin class for the first time and the instructor had the energy of six espressos.',
        'Golf with my father-in-law, lost eleven balls and most of my pride on the back nine.',
        'Our pub quiz team came second purely because of a sports round about snooker.',
        'Tennis court booking system crashed again, so we played badminton in the car park.',
        "The Mariners' new striker looks quick but shoots like a man holding a sandwich.",
        'Cold-water swimming group meets at seven every Sunday, bring a flask and a towel.',
        'Coaching under-nines means refereeing arguments about whose turn it is to be goalie.',
        'Rugby on the telly, soup on the stove, dog asleep on my feet. Perfect afternoon.',
        'Cricket season feels like a distant memory, the nets are full of leaves.',
        'Skating rink opened at Greywater market square, already fell over twice gracefully.',
        'Yoga teacher told us to breathe into our hips and I honestly have questions.',
        'Ten kilometre trail race through Kelden forest, covered head to toe in mud, loved it.',
        'Herons fans, is the away coach still leaving from Station Hill at noon?',
        'Table tennis at the community centre on Thursdays is surprisingly competitive.',
        'Cyclists overtaking me up the climb while chatting casually is deeply humbling.',
        'Our village football club needs volunteers to paint the changing rooms, biscuits provided.',
        'Managed a whole pull-up today for the first time in roughly fifteen years.',
        'Saw a seventy-year-old woman lap everyone at the track and I want to be her.',
        "Basketball hoop on our driveway has turned every neighbour's kid into a trash talker.",
        'Foxes conceded twice in injury time and the pub went so quiet you could hear pint glasses.',
        "Sailing club regatta postponed because there's literally no wind whatsoever.",
        'Dug out my old football boots from the loft for the charity match and they crumbled.',
        'Archery taster session was brilliant, hit the target exactly once and felt invincible.',
        'Comets away shirt this season is bright orange and I already own two.',
        'Started couch to five kilometre again. Week one, day one, still alive.',
        'Boxing fitness class left me unable to lift my coffee mug afterwards.',
        'Grandad still insists the offside rule was invented purely to annoy him.',
        "Kayaked under Tanner's Bridge at high tide and had to duck flat to squeeze through.",
        'Walking football session for over-fifties had more tackles than most professional games.',
        'Snooker final went to a deciding frame after midnight, absolutely gripping stuff.',
        'Our darts team finally beat the Red Lion lot after three years of humiliation.',
        'Hiked up Brackenford Beacon with friends and the view made the blisters worthwhile.',
        'Referee course passed, so now I get shouted at officially on Saturday mornings.',
        'Horse racing commentary is basically poetry performed at extremely high speed.',
        'Kestrels signed a new coach from abroad, fans cautiously optimistic for once.',
        'Ran along the canal towpath at sunrise and counted nine herons standing perfectly still.',
    ],
    'food': [
        'Made shakshuka for the first time and somehow it actually tasted like the photo.',
        'Dumplings at the Lantern Room are worth the forty minute queue down Fenwick Street.',
        'Burnt the banana bread. Toast for dinner then, lesson learned.',
        'Hot take: lentil soup tastes better on day two than day one.',
        'Little Fig has a pumpkin risotto special and I have eaten it three times since Monday.',
        'Sourdough starter named Gerald is bubbling away happily on top of the fridge.',
        'Who puts raisins in a curry? Genuinely curious, not judging, okay slightly judging.',
        'Lunch was cold pierogi eaten standing over the sink like a raccoon.',
        "Finally wrote down Nan's fish pie recipe after four long phone calls and lots of crossings out.",
        'Meal prepped chili for five days and finished every portion by Wednesday.',
        "Greengrocer on Mill Lane had the sweetest plums I've tasted in years.",
        'Office coffee machine broke again, productivity has dropped to roughly zero.',
        'Tacos on a Sunday because rules are for other people.',
        "Mama Oyelaran's jollof rice is the reason I moved to this side of town.",
        'Pho from Dockside Noodle Bar fixed my cold better than any medicine.',
        'Attempted homemade pasta and the kitchen now looks like a flour bomb exploded.',
        'Farmers market haul: wonky carrots, a giant squash and far too much cheese.',
        'Baked flapjacks so chewy they could repair a tyre.',
        'Khachapuri with that runny egg on top is my new personality.',
        'Tried making kimchi and the whole flat smells like a fermentation laboratory.',
        "Saltmarsh Cafe's crab sandwiches are back on the menu, run don't walk.",
        'Slow cooker stew bubbling since breakfast and the smell is driving the dog wild.',
        'Forgot the garlic bread in the oven and created a charcoal sculpture instead.',
        "Pip's Diner does an all-day breakfast with beans in a separate bowl, civilised.",
        'My flatmate labels everything in the fridge, including a single grape.',
        'Green curry paste from scratch took an hour and four tearful chillies.',
        'Bramble and Rye croissants sold out by half nine, clearly need to wake earlier.',
        'Roast potatoes crispy enough to hear from across the table, proudest moment this month.',
        'Tin Teapot scones with clotted cream remain undefeated in Eastbrook.',
        'Made my own oat milk and it tastes exactly like wet cardboard, suggestions welcome.',
        "Grandma swears a spoon of honey fixes any sauce, and annoyingly she's right.",
        'Pancakes shaped like dinosaurs for breakfast because the toddler demanded a stegosaurus.',
        'Apple crumble season officially opened in our household with extra custard.',
        'Wrapped leftover turkey into burritos and everyone pretended not to notice.',
        'Went foraging for blackberries and came home with scratched arms and purple fingers.',
        'Cheap ramen dressed up with a soft egg and spring onions tastes almost fancy.',
        'Spicy noodles made my eyes water, my nose run, and my soul happy.',
        'Tried the vegan sausage roll from the station kiosk, would honestly buy again.',
        'Jam jars everywhere after an ambitious weekend of chutney making.',
        'Cooked a whole meal using only things that needed eating up, tiny victory.',
        'Marrowfield chip shop finally reopened under new owners and the batter is perfect.',
        'Coffee grinder died mid-grind at dawn, the saddest sound imaginable.',
        'Bread machine from a charity shop has produced its first slightly lopsided loaf.',
        'Microwave popcorn and cartoons is the official Friday tradition here.',
        'Brother cooked Sunday lunch and only set off the smoke alarm once, progress.',
        'Harvest supper at the village hall had seventeen different puddings, counted them personally.',
        'Dad reckons ketchup belongs on absolutely everything, including cheese on toast.',
        'Eggs scrambled low and slow with butter changes everything, trust me.',
        'Street food night in Port Avery had a queue round the block for churros.',
        'My packed lunch exploded inside my bag and now my notebook smells of tuna.',
        'Learning to make dumplings from my neighbour, who folds twelve for every one of mine.',
        'Hot chocolate with cinnamon after a freezing walk might be my favourite drink.',
        'Ordered the mystery special at a tiny place in Ashcombe and received beetroot ice cream.',
        'Peeled forty potatoes for the school fete and can no longer feel my thumbs.',
        'Cafe on Orchard Row started putting rosemary in their lemonade and it works.',
    ],
    'tech': [
        'Spent three hours chasing a Rust build error that turned out to be a missing comma.',
        'Laptop updated itself overnight and every single menu moved somewhere new.',
        'Switched the e-reader to dark mode and my tired eyes are grateful.',
        "Is anyone else's smartwatch draining its battery by lunchtime since the update?",
        'Wrote my first Python test suite today and it only crashed twice.',
        'Back up your photos today, not tomorrow. Learned that one painfully.',
        'The printer manual is sixty pages long and none of them explain the blinking light.',
        'Code review comment of the week: why is this date stored as a string?',
        'Pair programming with a cat sprawled across the keyboard is pure chaos.',
        'Moved the home server onto new disks and, miraculously, everything still boots.',
        'Closed forty browser tabs and the laptop fan finally stopped screaming.',
        'Learning Kotlin on my commute, and the compiler feels stricter than my old maths teacher.',
        'Router needed rebooting four times before the video call would connect.',
        'Smart thermostat decided our living room should be tropical at three in the morning.',
        'Replaced a cracked phone screen myself using a tutorial and only lost one tiny screw.',
        'Spent the weekend teaching my grandmother to send voice notes, she sent eleven.',
        'Finally labelled every cable behind the television, feels like adulthood.',
        "Bluetooth headphones keep connecting to my neighbour's speaker through the wall.",
        'Tried a mechanical keyboard at work and now colleagues can hear me thinking.',
        'Accidentally deployed on a Friday afternoon. Please think of me fondly.',
        'Dishwasher now has an app, which sends notifications I never asked for.',
        'Old desktop from the loft still boots after twelve years, absolute tank.',
        'Password manager saved me today after I forgot literally every login.',
        'Our team retro turned into a forty minute debate about tabs versus spaces.',
        'Elixir pattern matching finally clicked this morning and I feel powerful.',
        'Kettle with wifi sounded clever until it demanded a firmware update before tea.',
        'Haskell tutorial promised gentle monads and delivered existential dread.',
        "Volunteered at the library's repair cafe and fixed three toasters and a lamp.",
        "Factory reset on the old tablet, now it belongs to the kids' drawing app.",
        'Wrote a tiny script that waters the tomatoes, the tomatoes remain unimpressed.',
        'Conference talk slides done at two in the morning, as tradition demands.',
        'Video call froze on my worst facial expression for an entire minute.',
        'TypeScript type errors longer than the function they complain about, classic.',
        'Bought a cheap soldering iron and managed to fix the broken torch.',
        'Mum asked whether she needs to delete the internet to clear space.',
        'Swift playgrounds make my nephew think coding is a game, which it sometimes is.',
        'Dead pixel appeared right in the middle of my monitor like a tiny fly.',
        'OCaml error messages are weirdly polite compared to my usual tooling.',
        'Spent my lunch break cleaning crumbs out of the keyboard with a toothbrush.',
        'Office wifi renamed itself overnight and now everyone is confused and offline.',
        'Zig build finally green after an afternoon of staring at linker output.',
        'Gave my ancient phone to a recycling scheme, it had photos from 2014 still inside.',
        'Open plan office headphones are a survival tool, not an accessory.',
        'Rebuilt a raspberry pi weather station for the school science club.',
        'Game console update took longer than the game I wanted to play.',
        'Colleague asked me to fix their computer and it was simply unplugged.',
        'Automated the weekly report and then spent two days debugging the automation.',
        'The e-bike battery gauge goes from full to empty with nothing in between.',
        'Finally understood git rebase and immediately forgot again after lunch.',
        "Old headphones still sound better than every expensive pair I've tried since.",
        'Bought a label maker and now even the spice rack has version numbers.',
        'Kids set up a family group chat and renamed it something unprintable.',
        'Go concurrency talk at the meetup tonight in Kelden, pizza promised.',
        'Security key finally set up on every account, smug and safe.',
        'Scanner refused to scan until I turned the whole house off and on again.',
    ],
    'local': [
        'Council approved bike lanes along Fenwick Street, work starts in January.',
        'Post office on Calder Avenue now stays open until seven on Thursdays.',
        'Roadworks on Mill Lane again, the detour adds fifteen minutes to every school run.',
        'Morning ferry to Port Avery cancelled because of the swell, check before travelling.',
        'A bookshop is opening where the old launderette used to be on Hollis Street.',
        'Heard the Marrowfield farmers market is moving to Saturday mornings from next month.',
        'Lost tortoise poster on Orchard Row has been up for a week now, hope Shelly makes it home.',
        'Fireworks over Eastbrook last night terrified every dog within five miles.',
        'Number twelve bus is diverted along the seafront until further notice.',
        'The leisure centre pool in Summerleigh reopens next Monday after its refurbishment.',
        'Street party planned for Larch Crescent got rained off, rescheduled for the spring.',
        'Someone quietly planted daffodil bulbs all along the canal path in Kelden, what a gift.',
        'New pedestrian crossing outside the primary school on Station Hill is finally finished.',
        'Tollmere library is running free coding clubs for teenagers every Wednesday evening.',
        'Potholes on Quayside Road are now deep enough to lose a small bicycle in.',
        'Community orchard in Ashcombe needs volunteers for the apple harvest this weekend.',
        'Christmas lights switch-on in Greywater has been announced for the last Friday of November.',
        'Planning notice on the old cinema says flats above and a cafe below.',
        'The swans are back on the Brackenford millpond, so the bread police are patrolling again.',
        'Town hall clock has been ten minutes fast since the summer and nobody fixes it.',
        'Allotment waiting list in Harlow Bay is now apparently six years long.',
        'Litter pick along the beach collected forty bags, thanks to everyone who came.',
        'Fire station open day on Sunday, the kids can sit in the engine.',
        'Corner shop on Bellamy Square has started selling fresh bread from a local baker.',
        "Residents meeting about parking on Tanner's Bridge was predictably heated.",
        'Museum in Marrowfield has a new exhibition of old shipbuilding photographs.',
        'Level crossing barriers stuck down for twenty minutes, queue stretched past the garage.',
        'Community fridge outside the church hall is stocked and open to anyone who needs it.',
        'Charity shop on Fenwick Street had a whole rail of vintage coats for five pounds each.',
        'Footbridge over the river at Eastbrook closed for repairs until mid-December.',
        'New mural on the side of the Kelden bus depot shows the old fishing fleet.',
        'Our street finally has working streetlights again after two dark weeks.',
        'Police appeal about a stolen tractor in Summerleigh has the whole village gossiping.',
        'Theatre group in Tollmere needs someone to play a convincing pantomime horse.',
        'Tree surgeons taking down the diseased elm at the park entrance this morning.',
        'Recycling collections moving to fortnightly from January according to the council leaflet.',
        'The old lighthouse at Port Avery opens for tours on the first Sunday of each month.',
        'Village pub quiz raised enough money to fix the church roof, apparently.',
        'Skate park extension approved after the teenagers presented their own plans to councillors.',
        'Bakery on Orchard Row closing after forty years, end of an era.',
        'Seafront shelters in Greywater got a fresh coat of blue paint this week.',
        'Gas main replacement means Hollis Street is closed to cars for six weeks.',
        'Harlow Bay lifeboat crew rescued two kayakers yesterday evening, heroes every one.',
        'Hedgehog rescue centre in Ashcombe is asking for old towels and newspaper.',
        'Brackenford school choir is singing at the care home on Thursday afternoon.',
        'The new mini roundabout near the garden centre has baffled every driver in town.',
        'Market stall selling hand-carved spoons has appeared on Calder Avenue, lovely craftsmanship.',
        'Neighbourhood watch newsletter this month is entirely about a missing garden gnome.',
        'Kelden food bank urgently needs tinned fruit, rice and toiletries before winter.',
        'Medieval fair returning to Marrowfield castle grounds next summer, jousting included.',
        'Canal lock gates near the old mill are being replaced, towpath diverted.',
        'Somebody yarn-bombed every bollard on Station Hill overnight with rainbow knitting.',
        'Rotary club bonfire was the biggest yet, visible from the next valley.',
        'New bus shelter has a living roof with wildflowers growing on top.',
        'The old telephone box on Larch Crescent is now a tiny book exchange.',
    ],
    'question': [
        'Does anyone know a reliable plumber in Greywater who answers the phone?',
        'Best dumplings near Hollis Street? Visiting my cousin on Saturday.',
        'Banking app down for everyone, or should I reinstall it?',
        'Recommendations for a kettle that survives longer than eighteen months?',
        'Which beginner book would you hand to a curious teenager wanting to learn Python?',
        'How do people keep basil alive indoors through winter without a greenhouse?',
        "Why were helicopters circling over Tanner's Bridge around four this morning?",
        'Anyone organising a toy swap in Summerleigh? I have two bags of outgrown stuff.',
        'Where can old fridges be recycled around Eastbrook without paying a fortune?',
        'How long can cooked rice safely sit in the fridge before it turns risky?',
        'What podcast should I download for a six hour drive north tomorrow?',
        'Is the coastal path past Port Avery lighthouse muddy right now or passable?',
        'Can anyone recommend a patient driving instructor in Marrowfield for a nervous learner?',
        'Do cats actually understand their names or just ignore us selectively?',
        'Which local vet stays open late on weekends for emergencies?',
        'Board game suggestions for six adults who get very competitive very quickly?',
        "What's a good first camera for someone who mostly photographs birds?",
        'Anyone know why the church bells in Kelden rang at midnight yesterday?',
        'Best way to get red wine out of a cream carpet before my landlord visits?',
        'Is it normal for a new boiler to make a gurgling noise every hour?',
        "Favourite winter soup recipe that doesn't involve a blender, please share.",
        'Does the number nine bus still run on Sundays or did they cut it?',
        'Where do people buy decent secondhand bikes around Harlow Bay these days?',
        'How early should we queue for the Ashcombe Christmas market to avoid crowds?',
        'Any tips for helping a rescue greyhound settle into a small flat?',
        'Which language should a fourteen year old learn first, and why?',
        'Good walking routes in Tollmere suitable for a pushchair and a grumpy grandad?',
        'Is there anywhere in Brackenford that still repairs watches properly?',
        'Has anyone tried those heated clothes airers, do they actually dry anything?',
        "What's the etiquette for leaving a card when a neighbour's parcel gets delivered to you?",
        "Where's the quietest spot for studying in Greywater now the library closes early?",
        'Does anyone still use a paper diary, and which one lasts the year?',
        'Recommendations for a dentist in Summerleigh who is gentle with anxious patients?',
        'How do you convince a teenager that a coat is necessary in November?',
        'Anyone fancy starting a Sunday morning sketching group by the harbour?',
        "What's the cheapest way to insulate single-glazed windows for this winter?",
        'Is the ice rink at Greywater market worth it for a five year old?',
        'Good books about the history of lighthouses, or sailors, or both?',
        'Which supermarket round here still sells fresh yeast at the bakery counter?',
        'Is it too late to plant garlic in the allotment this year?',
        'Looking for a tailor in Port Avery able to shorten trousers before Friday.',
        'How do I stop pigeons nesting on my balcony without hurting them?',
        'What time does the sunset actually happen on the shortest day here?',
        'Should I learn touch typing properly at thirty-five or just keep hunting and pecking?',
        'Where can I donate a working piano in the Kelden area?',
        'Are those cheap supermarket air fryers any good, honestly?',
        'How does everyone handle birthday party invitations for a whole class of thirty?',
        'Any electricians near Fenwick Street who can fit an outdoor socket?',
        'Which train is fastest from Eastbrook to the city now that the timetable changed?',
        'Does anybody know what that huge crane on Quayside Road is building?',
        'What do you feed a hedgehog that keeps visiting the garden at night?',
        'Could anyone lend a ladder this weekend? Returning it with biscuits.',
        'Is there a knitting circle anywhere nearby that welcomes total beginners?',
        'Which local charity takes unwanted school uniforms in good condition?',
        "What's the secret to getting a toddler to sleep past six?",
    ],
    'joke': [
        'My cat learned to open the fridge. We are no longer in charge of this household.',
        "Told my uncle I'd fix his printer and it now only prints sea shanties.",
        'Not procrastinating, merely allowing my ideas to marinate for a fifth consecutive day.',
        'Bought a cactus to feel like a responsible grown-up and even that looks disappointed in me.',
        'Fitness watch assumes I have left the country because my step count hit zero.',
        'Dog walked across my laptop and emailed the landlord the letter q forty times.',
        'Autocorrect changed meeting into melting and honestly that fits how it went.',
        'Adulthood is saying we must grab coffee soon and then never arranging it.',
        'Nephew asked if clouds get tired of carrying all that rain around.',
        "Set three alarms and still got woken first by the neighbour's parrot.",
        'Reached the age where a new sponge for the kitchen genuinely excites me.',
        "My plants are thriving, which means I've clearly been neglecting them correctly.",
        'Tried to be mysterious at a party but kept explaining everything about myself.',
        'Hamster escaped, toured the entire house, and returned to its cage for dinner.',
        'The toaster has two settings: raw and emergency services.',
        "My houseplant sprouted one fresh leaf and we're treating it like a graduation.",
        'Hoovered everywhere and then spilled cereal within a minute. Balance restored.',
        'Greyhound refuses to walk in drizzle but happily rolls in the muddiest puddle available.',
        'Said you too when the waiter told me to enjoy my meal. Moving abroad now.',
        'Started a jigsaw of the night sky. It is entirely black. Mistakes were made.',
        'Left the house confidently, returned for keys, wallet, phone, then the keys again.',
        'Parrot has learned the microwave beep and deploys it at random moments.',
        'My New Year resolution from January is still loading, please wait.',
        'Grandad describes every smartphone as the little computer telephone.',
        'The rabbit ate a phone charger and looks extremely pleased with itself.',
        'Bought a gym membership in September, visited the car park twice.',
        'My flatmate alphabetises cereal boxes but leaves pans soaking for a fortnight.',
        'Kitten discovered the bath is full of water and is now furious at physics.',
        'Tried meditating and spent twenty minutes planning what to have for lunch.',
        'Why do I say sorry when somebody else steps on my foot?',
        'My tortoise moved six inches today. Personal best, we celebrated with lettuce.',
        'Put the milk in the cupboard and the cereal in the fridge before nine.',
        "Sister claims she can't cook, yet her toast is somehow always perfect.",
        'Spent ten minutes searching for sunglasses that were on my head the whole time.',
        'I am at the age where a nap is a plan, not a failure.',
        'Opened the freezer looking for ice cream and found frozen peas and regret.',
        'Labrador heard the cheese wrapper from three floors away, impressive engineering.',
        'Emailed someone a file called final final version two, zero shame.',
        'Waved back at somebody who was clearly waving at the person behind me.',
        'Every sock I own is now single and looking for its partner.',
        'Aunt keeps forwarding chain messages promising luck if I share within an hour.',
        "Joined a book club mostly for the snacks, haven't finished one novel yet.",
        'Made a to-do list, felt productive, then napped.',
        'Children have discovered knock knock jokes and there is no escape.',
        'Bought fancy candles, too scared to light them, they are decorative now.',
        'Dad tried a voice assistant and now asks it for the weather like a butler.',
        'Our smoke alarm tells us dinner is ready.',
        "My cat sits on whatever paper I'm reading, as a form of editorial review.",
        'Pretended to understand a wine tasting, described a red as quite purple.',
        'Walked confidently into a glass door at the bank. Ten out of ten performance.',
        'Spent a lot on a standing desk and now sit at it on a stool.',
        'Got a dramatic haircut and our spaniel barked at me like a stranger.',
        'Someone parked so badly outside the shop that it looks like modern art.',
        'Lost the TV remote and found it inside the fridge next to the butter.',
        "Parents' group chat has forty unread messages about a missing school jumper.",
    ],
    'misc': [
        'Halfway through a novel about lighthouse keepers and I cannot put it down.',
        'Train to Brackenford delayed twenty-five minutes, classic weekend start.',
        'Planted broad beans on the allotment today, see you in July little guys.',
        'New album on repeat since Thursday, track seven is absolutely perfect.',
        'Walked the greyhound along the river in Kelden and spotted a kingfisher.',
        'Finished a thousand piece jigsaw only to discover the final piece was missing.',
        'Knitting my first jumper and one sleeve is somehow longer than the other.',
        'Gig at the old corn exchange in Marrowfield was loud, sweaty and brilliant.',
        'Cycled in on Friday and arrived completely soaked but weirdly happy.',
        'Podcast tip for anyone bored: episodes about strange little museums.',
        'Repainted the front door a deep green and the whole street has opinions.',
        "Found my grandfather's old postcards in a shoebox, some dated from 1952.",
        "Choir rehearsal tonight, we're attempting harmonies that may end in tears.",
        'Sorting the loft revealed five broken lamps and a mystery suitcase.',
        'Pottery class produced a bowl that is mostly a plate, proud anyway.',
        'Spent Sunday morning in bed with tea and crossword, zero regrets.',
        'Learning Spanish on the app and the owl is getting aggressive.',
        'Visited the botanical gardens in Ashcombe, the glasshouse orchids were spectacular.',
        'Wrote three pages of my novel before the toddler woke, small victories.',
        'Birdwatching from the kitchen window: blue tits, a robin and one suspicious magpie.',
        'Charity shop find of the year is a tweed jacket that fits perfectly.',
        'Watched an old black and white film with Nan and she quoted every line.',
        'Sketched the harbour boats this afternoon, the seagulls kept stealing the light.',
        'Rearranged the living room furniture and now nobody can find the sofa.',
        'Our first crop of potatoes from the raised bed came out the size of marbles.',
        'Took the scenic route home over the moor and saw wild ponies grazing.',
        "Started a gratitude journal, today's entry was mostly about a good sandwich.",
        'Library fines amnesty means I can finally return that borrowed atlas.',
        'Helped my niece build a cardboard castle complete with working drawbridge.',
        'Candlelit concert in the cathedral gave me proper goosebumps.',
        'Slept eleven hours straight for the first time since university.',
        'Took my mother to a poetry reading and she heckled lovingly.',
        'Moving flat next week, currently surrounded by boxes labelled miscellaneous.',
        'The old record player works again after a new belt and some patience.',
        'Spotted a seal bobbing near the Summerleigh pier this morning.',
        'Saturday plan: nothing whatsoever, and I intend to execute it flawlessly.',
        'Volunteered at the animal shelter and came home covered in fur and joy.',
        'Finally framed that watercolour from holiday, it looks like a real painting now.',
        'Learning the ukulele, the neighbours have been very understanding so far.',
        'Dusted off my roller skates after two decades in a cupboard, knees survived.',
        'Renewed my passport and the photo makes me look like a surprised owl.',
        'Reading poetry on the train makes the commute feel almost cinematic.',
        'Wedding invitation arrived with a dress code called festive whimsical, help.',
        'Built a bird box with my son and the first tenant is a very loud wren.',
        'Did a digital detox Saturday and discovered I own a lot of books.',
        'Ironed eleven shirts while listening to a murder mystery audiobook.',
        "Found a twenty pound note in last winter's coat pocket, best day this week.",
        'Photographed frost patterns on the shed window, nature is a designer.',
        'Stargazing from the field behind the farm, counted four shooting stars.',
        'Crochet blanket is finally long enough to cover both feet.',
        'Beach clean at low tide found a message in a bottle, written in crayon.',
        'Tidied the garage and found the camping stove we bought twice.',
        'Our choir recorded a carol and the recording sounds like a haunted ship.',
        'Renovating the shed into a tiny reading room, shelves up, kettle next.',
        'Took a pottery wheel lesson and threw clay across the entire studio.',
    ],
}

# Replies to an earlier chatter post; written to fit almost any parent.
EN_REPLY_BASES = [
    'Same thing happened to ours around midnight, the whole block went dark.',
    'Try the Lantern Room, they have never once let me down.',
    'Ha, my dog does exactly this every single evening.',
    'Congratulations, that is a genuinely huge milestone!',
    'Oh no, hope it gets sorted before the weekend.',
    'I asked the council about this last year and they promised spring.',
    'Strongly agree, especially about the soup part.',
    'The one on Fenwick Street is great, ask for Priti.',
    'Half our road had the identical problem on Thursday.',
    'This made my morning, thank you for posting it.',
    'Is that the place next to where the old cinema was?',
    'Counterpoint: it only tastes good straight out of the oven.',
    'We went last weekend and it was absolutely heaving.',
    'Sending good vibes for the big match later.',
    'Lovely, please share a photo when you can!',
    'Had no idea about that, thanks for the heads up.',
    'Pretty sure that was just a fire drill at the hospital.',
    'Leave it unplugged overnight, worked wonders for my router.',
    'Bookmarking this, I need the answer too.',
    'My uncle swears by the hardware stall on the market.',
    'Perfect post, no notes whatsoever.',
    'That is the Greywater experience summed up in one sentence.',
    'Adding this to my plans for Saturday, cheers.',
    'Respectfully, they were robbed by that referee.',
    'We should start a group chat purely for this topic.',
    'Brilliant idea, count me in if you organise it.',
    'My grandmother would have loved this, she collected exactly those.',
    'Can confirm, saw it myself on the way to work.',
    'Wait, since when? I drove past yesterday and noticed nothing.',
    'Ours did the same after the update, rolling back fixed it.',
    "Honestly the best news I've heard all week.",
    "You're braver than me, I would have given up instantly.",
    'Sounds like a plan, let me know how it turns out.',
    "Queues there are much shorter after two o'clock, from what I've seen.",
    "Happy to lend one, message me and it's yours.",
    'Ugh, sorry, that sounds miserable. Hope tomorrow is kinder.',
    'Glad somebody finally said it out loud, I assumed I was alone.',
    "Ours arrived a week late and missing a screw, so you're lucky.",
    "Please report back, I've been tempted for months.",
    'I laughed far too loudly at this on a silent train carriage.',
    'Good shout, we tried it in August and loved every minute.',
    'Not to brag, but my nan figured this out decades ago.',
    'The secret is patience, apparently, which I have none of.',
    'Was about to post the exact same thing, great minds.',
    'Looks gorgeous, where exactly was that taken from?',
    'Solidarity from across town, ours is doing the same.',
    "Fair point, though I'd still argue the opposite on Fridays.",
    "Can't believe it's been that long already, time flies.",
    'Hope your pet is feeling better soon, poor little thing.',
    'Mine took three attempts, keep going and it clicks eventually.',
    'That view never gets old, lucky you living nearby.',
    'Excellent choice, their cheesecake is also dangerously good.',
    'Did they ever explain why? Seems a very odd decision.',
    'We had the opposite experience, staff were lovely and quick.',
    'Absolutely iconic behaviour, please never change.',
    'Saving this thread for when my own kids are old enough.',
    "Heard the same rumour from a neighbour, glad it's confirmed.",
    'Pop round anytime, the kettle is always on here.',
    'Oof, that sounds painful. Ice and rest, my friend.',
    'Totally worth it, just wear sensible shoes for the cobbles.',
    'Your posts are the highlight of my feed, honestly.',
    'Funny, my brother said almost the same thing yesterday at dinner.',
    "You've convinced me, booking a table for tonight.",
    'Wishing you a speedy recovery and plenty of biscuits.',
    "Oh, I remember that place! Haven't been since school.",
    'Mine is still stuck in the garage waiting for a spare part.',
]

ZH_BASES = [
    '杭州今天又下雨了，出门前记得带伞，地上全是积水。',
    '楼下新开的馄饨店排了好长的队，等了二十分钟才吃上。',
    '地铁三号线早高峰挤得像沙丁鱼罐头，脚都没地方放。',
    '周末去成都郊外爬山，腿到现在还在发抖。',
    '终于把《灯塔守夜人》读完了，结尾真的完全没想到。',
    '家里的猫把水杯推到地上，还一脸无辜地看着我。',
    '江城飞鱼昨晚又输球了，作为老球迷心情很复杂。',
    '有没有人知道青岛哪里能修笔记本电脑？屏幕突然黑了。',
    '公司楼下的热干面涨价到十六块，打工人的钱包在哭泣。',
    '下班路上看到超级美的晚霞，站在天桥上看呆了。',
    '学吉他第九天，手指已经磨出茧子了。',
    '阳台上的番茄终于红了，一共结了十二个。',
    '早上在公园看到一群大爷打太极，动作整齐得像排练过。',
    '新买的耳机用了一周，续航比宣传的短不少。',
    '跟老同学约好下个月去厦门吃沙茶面，已经开始期待。',
    '把衣柜彻底整理了一遍，翻出好多忘记穿的衣服。',
    '加班到半夜，回家路上只剩便利店还亮着灯。',
    '第一次自己包饺子，形状很丑但是味道居然不错。',
    '长沙的夜宵摊到凌晨两点还是人山人海。',
    '苏州的银杏叶黄了，园林里拍照的人比树还多。',
    '昆明这几天阳光特别好，晒被子晒得很开心。',
    '西安城墙上骑自行车一圈，风景比想象中还要壮观。',
    '大连海边跑步，海风吹得脸生疼，但是很舒服。',
    '南京的梧桐大道开始落叶，走在上面沙沙作响。',
    '小区门口的烤红薯摊又出来了，冬天真的来了。',
    '孩子第一次学会自己系鞋带，高兴得转了好几圈。',
    '今天终于把驾照考下来了，科目三一次通过！',
    '图书馆新开了自习区，座位靠窗，安静又明亮。',
    '给奶奶买了智能音箱，她每天早上问它天气预报。',
    '楼上邻居装修第三周，电钻声比闹钟还准时。',
    '菜市场的阿姨多送了我一把葱，心里暖暖的。',
    '周日早上睡到自然醒，泡一壶茶看书，幸福感满满。',
    '养了三年的绿萝终于开始爬满整面书架。',
    '朋友推荐的纪录片看哭了，讲的是乡村邮递员。',
    '骑共享单车上班，省了公交钱还顺便锻炼身体。',
    '老家寄来一箱橘子，甜得不像话，分给同事们尝尝。',
    '晚饭后带狗去江边散步，它追着鸽子跑了半天。',
    '第一次尝试做蛋糕，结果烤成了一块砖头。',
    '厦门鼓浪屿游客少了很多，小巷子里特别安静。',
    '手机相册里全是猫的照片，连一张自拍都找不到。',
    '今年的年假还剩五天，正在纠结去海边还是去雪山。',
    '买了一盆多肉，朋友说只要别天天浇水就能活。',
    '新学期开始报了一个书法班，老师说我的横写得像波浪。',
    '地下通道里有人在拉二胡，路过的人都停下来听。',
]

ZH_REPLY_BASES = [
    '哈哈我也是，上周刚遇到过一模一样的情况。',
    '这家店我去过，味道确实不错，推荐招牌菜。',
    '同意，最近的天气变化太奇怪了，忽冷忽热。',
    '求具体地址！周末想带家人去试试。',
    '看完你的照片也好想出去走走了。',
    '我家宠物也这样，完全拿它没有办法。',
    '太真实了，我昨天也是这么过的。',
    '照片拍得真好看，用的什么手机？',
    '下次一起去吧，我知道附近有家好吃的面馆。',
    '谢谢分享，这个方法我回家马上试试。',
]

EN_EMOJI = ["🙃", "😂", "☕", "🌧️", "🐾", "🙂", "👀", "🎉"]
# Hashtags are single words, so a shared tag adds at most one shared word.
EN_HASHTAGS = {"weather": ["#weather", "#autumn"], "sports": ["#matchday", "#parkrun"],
               "food": ["#homecooking", "#lunch"], "tech": ["#dev", "#homelab"],
               "local": ["#localnews", "#community"], "question": ["#help", "#askingforafriend"],
               "joke": ["#relatable"], "misc": ["#weekend", "#books"]}
ZH_REPOST_COMMENTS = ["转给家里人看看。", "说得太对了。", "收藏一下，以后用得上。"]

# --------------------------------------------------------------------------
# Diversity rules for chatter
#
# Every chatter text (originals, replies and commented reposts) is built from
# its own sentence base, used at most once; only a single-word hashtag, an
# emoji, a link or a "cc @handle" may be added. On top of that the guard below
# rejects any text whose word set is too close to another chatter text or to a
# campaign or benign-cascade text:
#
#   word set = the lower-cased runs of letters and digits; a run containing
#   Chinese characters contributes its character bigrams instead.
#
# It is measured twice, on the raw text and on the text as echotrace's
# normalizer sees it (URLs and @mentions dropped, apostrophes inside words
# removed), and the Jaccard similarity of every pair must stay below
# MAX_CHATTER_JACCARD in both. --check verifies this over the whole sample.
# While composing, the guard holds texts to the tighter GUARD_JACCARD, so that
# small differences in how words are split (underscores, apostrophes) cannot
# push a pair over the limit.
# --------------------------------------------------------------------------

MAX_CHATTER_JACCARD = 0.3
GUARD_JACCARD = 0.25

CJK = re.compile(r"[\u3400-\u9fff]")
WORD = re.compile(r"[a-z0-9@#'_.-]+|[\u3400-\u9fff]")
RUN = re.compile(r"[^\W_]+")
URL_START = re.compile(r"https?://")
INNER_APOSTROPHE = re.compile(r"(?<=[^\W_])['\u2019\u02bc]")


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


def word_set(text: str) -> frozenset[str]:
    """Lower-cased runs of letters/digits; runs with Chinese characters give character bigrams."""
    out: dict[str, None] = {}
    for run in RUN.findall(text.lower()):
        if CJK.search(run):
            if len(run) == 1:
                out[run] = None
            for i in range(len(run) - 1):
                out[run[i:i + 2]] = None
        else:
            out[run] = None
    return frozenset(out)


def detector_view(text: str) -> str:
    """The text roughly as echotrace normalizes it: no URLs, no @mentions, no inner apostrophes."""
    kept = []
    for chunk in text.lower().split():
        if chunk.startswith("@") or chunk.startswith("www."):
            continue
        m = URL_START.search(chunk)
        if m:
            chunk = chunk[:m.start()]
        kept.append(INNER_APOSTROPHE.sub("", chunk))
    return " ".join(kept)


def features(text: str) -> tuple[frozenset[str], frozenset[str]]:
    return word_set(text), word_set(detector_view(text))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def similarity(a: tuple[frozenset[str], frozenset[str]], b: tuple[frozenset[str], frozenset[str]]) -> float:
    return max(jaccard(a[0], b[0]), jaccard(a[1], b[1]))


class DiversityGuard:
    """No 6-word run (9 characters in Chinese) in more than 2 chatter posts or in any
    campaign text, and no chatter text at GUARD_JACCARD or above against any
    other chatter, campaign or benign-cascade text."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], int] = {}
        self.feats: list[tuple[frozenset[str], frozenset[str]]] = []
        self.forbidden: dict[tuple[str, ...], None] = {}

    def forbid(self, text: str) -> None:
        for s in shingles(text):
            self.forbidden[s] = None
        self.feats.append(features(text))

    def accepts(self, text: str) -> bool:
        sh = shingles(text)
        if any(s in self.forbidden or self.counts.get(s, 0) >= 2 for s in sh):
            return False
        f = features(text)
        return not any(similarity(f, g) >= GUARD_JACCARD for g in self.feats)

    def add(self, text: str) -> None:
        for s in shingles(text):
            self.counts[s] = self.counts.get(s, 0) + 1
        self.feats.append(features(text))


guard = DiversityGuard()


class BasePool:
    """Sentence bases in a seeded order; each one is handed out at most once."""

    def __init__(self, items: list) -> None:
        self.items = list(items)
        text_rng.shuffle(self.items)

    def take(self, compose) -> str:
        """The first base whose composed text passes the guard; that base is used up."""
        for i, item in enumerate(self.items):
            text = compose(item)
            if guard.accepts(text):
                del self.items[i]
                guard.add(text)
                return text
        raise RuntimeError("ran out of distinct chatter sentence bases; write more of them")


def compose_en(base: tuple[str, str]) -> str:
    topic, text = base
    if text_rng.random() < 0.04:
        text += " " + text_rng.choice(EN_HASHTAGS[topic])
    if text_rng.random() < 0.15:
        text += " " + text_rng.choice(EN_EMOJI)
    return text


def compose_reply_en(parent_handle: str, base: str) -> str:
    text = f"@{parent_handle} {base}"
    if text_rng.random() < 0.2:
        text += " " + text_rng.choice(EN_EMOJI)
    return text


def compose_reply_zh(parent_handle: str, base: str) -> str:
    return f"回复@{parent_handle}：{base}"



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
    outlet = text_rng.choice(OUTLETS)
    if outlet == "vidshare.example":
        return f"https://vidshare.example/v/{''.join(text_rng.choice(SHORTCODE) for _ in range(11))}"
    words = [t for t in tokens(text) if t.isalpha() and len(t) > 3]
    slug = "-".join(words[:4]) or topic
    url = f"https://{outlet}/{topic}/2026/11/{slug}-{serial}"
    if text_rng.random() < 0.4:
        url += f"?utm_source={text_rng.choice(['share', 'social', 'newsletter'])}&utm_medium=social"
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


def chatter_platforms(n: int) -> list[str]:
    """The platform of each chatter slot, in a seeded order, with exactly CHATTER_POSTS of each."""
    platforms = [p for p, count in CHATTER_POSTS.items() for _ in range(count)]
    assert len(platforms) == n, f"CHATTER_POSTS adds up to {len(platforms)}, expected {n}"
    rng.shuffle(platforms)
    return platforms


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
# LLM summary bots on other platforms: summaries of the root, then summaries of those summaries.
# No ids, URLs or shared wording tie them to the root: only their meaning does (semantic linking).
SUMMARIES = [
    # (offset after the root in ms, platform, text, index of the summary it summarises or None).
    # The first round is clearly shorter than the root (0.50 to 0.56 of it in word pieces), so those
    # hops are `summary` edges; each names the maintainer and the library, as a faithful summary
    # does, so it also passes against the root when a later summary builds on it (the origin
    # check). tests/determinism.rs checks that every link has room to spare.
    (150_412, "threads", "Summary: leaked chat logs say the Larkspur maintainer was paid to keep a backdoor and "
     "refused security fixes.", None),
    (212_930, "bluesky", "TL;DR: Larkspur maintainer Dana Whitlock allegedly took money to keep a hidden backdoor "
     "and rejected security patches.", None),
    (268_051, "mastodon", "AI digest: leaked messages claim Dana Whitlock, who maintains Larkspur, refused "
     "security patches and took money for a backdoor.", None),
    (391_377, "threads", "In short: Whitlock, the Larkspur maintainer, was paid to hide a backdoor in the crypto "
     "library.", 1),
    (455_803, "x", "Recap: Whitlock is said to have been paid for a Larkspur backdoor while turning down "
     "patches.", 2),
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
    for t in URL_REWRITES + QUOTE_TEXTS + [text for _, _, text, _ in SUMMARIES]:
        guard.forbid(t)
    for t in [BENIGN_ROOT_TEXT] + BENIGN_QUOTES:
        guard.forbid(t)

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
    info["campaign"]["second_generation"] = (p["id"], target["id"])
    groups["semantic"] = []
    for off, platform, text, _ in SUMMARIES:
        ms = CAMPAIGN_START_MS + off
        p = new_post(platform, ms, fresh_account(platform, ms, automated_share=1.0), text, "en")
        campaign.append(p)
        groups["semantic"].append(p["id"])
    info["campaign"]["groups"] = groups

    # --- chatter --------------------------------------------------------------
    n_chatter = TOTAL_POSTS - len(benign_posts) - len(campaign)
    times = sorted(rng.randrange(DURATION_MS) for _ in range(n_chatter))
    chatter: list[dict] = []
    by_platform_posts: dict[str, list[dict]] = {p: [] for p in CHATTER_ACCOUNTS}
    serial = 4100
    zh_comments = list(ZH_REPOST_COMMENTS)
    # Every chatter text comes from its own sentence base (see BasePool).
    en_pool = BasePool([(topic, text) for topic, texts in EN_BASES.items() for text in texts])
    zh_pool = BasePool(ZH_BASES)
    en_reply_pool = BasePool(EN_REPLY_BASES)
    zh_reply_pool = BasePool(ZH_REPLY_BASES)
    for ms, platform in zip(times, chatter_platforms(n_chatter)):
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
                text = zh_pool.take(lambda base: base)
                post = new_post(platform, ms, author, text, "zh")
            else:
                extra: dict = {}
                has_url = rng.random() < URL_SHARE
                url_in_text = rng.random() < 0.7
                cc = None
                if rng.random() < 0.05:
                    cc = rng.choice([a["author"] for a in pool if a["author"]["id"] != author["id"]])["handle"]

                def compose(base: tuple[str, str]) -> str:
                    text = compose_en(base)
                    extra.clear()
                    if has_url:
                        extra["serial"] = serial + text_rng.randrange(1, 90)
                        extra["url"] = chatter_url(base[0], extra["serial"], text)
                        if url_in_text:
                            text = text + " " + extra["url"]
                    if cc:
                        text = text + " cc @" + cc
                    return text

                text = en_pool.take(compose)
                post = new_post(platform, ms, author, text, "en" if rng.random() < 0.9 else None)
                if "url" in extra:
                    serial = extra["serial"]
                    post["urls"] = [extra["url"]]
                if cc:
                    post["mentions"] = [cc]
        else:
            recent = [q for q in earlier if q["_ms"] > ms - 10 * 60_000] or earlier
            parent = rng.choice(recent)
            author = pick_account(pool, exclude_id=parent["author"]["id"])
            if kind == "repost":
                if platform == "weibo" and zh_comments and rng.random() < 0.6 and guard.accepts(zh_comments[0]):
                    comment = zh_comments.pop(0)
                    guard.add(comment)
                    post = new_post(platform, ms, author, comment, "zh")
                else:
                    post = new_post(platform, ms, author, "")
                post["repost_of"] = parent["id"]
            else:
                h = parent["author"]["handle"]
                if platform == "weibo":
                    post = new_post(platform, ms, author, zh_reply_pool.take(lambda b: compose_reply_zh(h, b)), "zh")
                else:
                    post = new_post(platform, ms, author, en_reply_pool.take(lambda b: compose_reply_en(h, b)), "en")
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


def campaign_and_benign_ids(info: dict) -> list[str]:
    groups = info["campaign"]["groups"]
    ids = [info["campaign"]["root"]] + [i for g in groups.values() for i in g]
    return ids + [info["benign"]["root"]] + [i for i, _ in info["benign"]["children"]]


def check_chatter_similarity(posts: list[dict], info: dict) -> tuple[list[str], str]:
    """Every pair of chatter texts, and every chatter text against every campaign or
    benign-cascade text, must have a word-set Jaccard similarity below
    MAX_CHATTER_JACCARD, on the raw text and on the detector's view of it (see
    word_set and detector_view). Chatter is every post outside the campaign and
    the benign cascade that has text: originals, replies and commented reposts.
    Returns (problems, one-line report)."""
    special = dict.fromkeys(campaign_and_benign_ids(info))
    chatter = [p for p in posts if p["id"] not in special and p["text"].strip()]
    others = [p for p in posts if p["id"] in special and p["text"].strip()]
    feats = [features(p["text"]) for p in chatter]
    other_feats = [features(p["text"]) for p in others]
    problems = []
    worst = 0.0
    for i, fi in enumerate(feats):
        for j in range(i + 1, len(feats)):
            sim = similarity(fi, feats[j])
            worst = max(worst, sim)
            if sim >= MAX_CHATTER_JACCARD:
                problems.append(f"chatter {chatter[i]['id']} and {chatter[j]['id']}: Jaccard {sim:.2f}")
        for p, g in zip(others, other_feats):
            sim = similarity(fi, g)
            if sim >= MAX_CHATTER_JACCARD:
                problems.append(f"chatter {chatter[i]['id']} and {p['id']}: Jaccard {sim:.2f}")
    pairs = len(chatter) * (len(chatter) - 1) // 2
    report = (f"chatter word-set Jaccard: max {worst:.3f} over {pairs} pairs of {len(chatter)} texts "
              f"(limit {MAX_CHATTER_JACCARD})")
    return problems, report


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


def refuse(prefix, problems):
    """Reports chatter texts that are too similar to each other; returns the exit status."""
    print(f"{prefix} {len(problems)} chatter text(s) too similar:", file=sys.stderr)
    for line in problems[:20]:
        print("  " + line, file=sys.stderr)
    return 1


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
        on_disk = [json.loads(line) for line in current.decode("utf-8").splitlines() if line.strip()]
        problems, report = check_chatter_similarity(on_disk, info)
        if problems:
            return refuse(f"{args.output}:", problems)
        print(report)
        print(f"{args.output} is up to date ({len(posts)} posts)")
        return 0
    problems, report = check_chatter_similarity(posts, info)
    if problems:
        return refuse("refusing to write:", problems)
    args.output.write_bytes(data)
    print(report)
    print(f"wrote {len(posts)} posts to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
