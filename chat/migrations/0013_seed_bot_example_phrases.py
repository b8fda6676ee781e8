"""Seed data: the bot's intents with example phrases in English, Turkish and Latvian, as a
merchant would write them in the admin. They are the bot's training data (chat.nlu): how
shoppers really type (no diacritics, short forms, inflected words) belongs here.

Existing rows keep their answers and phrases; missing phrases are added, missing rows created.
Hand-off phrases in ChatSettings gain word stems ending in "*" ("insan*" also matches "insanla").
"""

from django.db import migrations

ARTICLES = [
    {
        "slug": "atgriesana",
        "language": "lv",
        "title": "Atgriešana un naudas atmaksa",
        "question": "Kā atgriezt preci?",
        "body": "Nelietotas preces varat atgriezt 30 dienu laikā; naudu atmaksājam 5 dienu laikā "
        "pēc sūtījuma saņemšanas.",
        "keywords": ["atgriešana", "atgriezt", "atmaksa"],
    },
]

ARTICLE_FOR = {
    ("shipping", "en"): "shipping",
    ("shipping", "lv"): "piegade",
    ("shipping", "tr"): "kargo",
    ("returns", "en"): "returns",
    ("returns", "lv"): "atgriesana",
    ("returns", "tr"): "iade",
}

INTENTS = {
    "order_status": {
        "kind": "order_status",
        "answer": {
            "en": "Here's what I found:\n{orders}",
            "lv": "Lūk, ko atradu:\n{orders}",
            "tr": "Bulduğum bilgiler:\n{orders}",
        },
        "phrases": {
            "en": [
                "where is my order", "order status", "track my order", "my order", "parcel",
                "where is my package", "my parcel hasn't come", "my order has not arrived yet",
                "still waiting for my delivery", "when will my order arrive",
                "when does my package get here", "is my order on the way",
                "has my order been dispatched", "tracking number for my order",
                "track my parcel", "order not received", "i never got my order",
                "where's my stuff", "status of order 1001", "what happened to my order",
                "my delivery is late", "order hasnt arrived", "delivery never arrived", "parcel stuck in transit", "wheres my package",
                "did you send my order", "it's been two weeks and no parcel",
            ],
            "tr": [
                "siparişim nerede", "sipariş durumu", "siparişim", "sipariş takibi",
                "siparisim nerede", "kargom nerede", "kargom gelmedi", "siparişim gelmedi",
                "siparişim ne zaman gelir", "paketim nerede", "paketim gelmedi",
                "siparişim kargoya verildi mi", "kargo takip numarası", "kargomu takip etmek",
                "siparişim hâlâ ulaşmadı", "siparis durumu nedir", "1001 numaralı sipariş",
                "siparişim yolda mı", "kargom ne zaman gelecek", "siparişimi alamadım",
                "siparisimi bekliyorum", "sipariş ettiğim ürün gelmedi", "paketim elime ulaşmadı", "kargo nerde kaldi",
            ],
            "lv": [
                "kur ir mans pasūtījums", "pasūtījuma statuss", "pasūtījums",
                "kur ir mans pasutijums", "mans pasūtījums nav atnācis", "kur ir mana paka",
                "paka nav pienākusi", "kad pienāks pasūtījums", "kad atnāks mana paka",
                "vai pasūtījums ir nosūtīts", "pasūtījuma izsekošana", "sūtījuma numurs",
                "izsekot sūtījumu", "pasūtījumu vēl neesmu saņēmis", "kur palicis sūtījums",
                "pasūtījuma 1001 statuss", "mans sūtījums kavējas", "kad saņemšu pasūtījumu",
                "pasutijums nav sanemts", "gaidu savu pasūtījumu", "kur ir mana prece",
            ],
        },
    },
    "shipping": {
        "kind": "article",
        "answer": {"en": "", "lv": "", "tr": ""},
        "phrases": {
            "en": [
                "shipping", "delivery", "how long does delivery take", "shipping cost",
                "how much does shipping cost", "delivery price", "do you deliver to my country",
                "which countries do you ship to", "international shipping", "free delivery",
                "is delivery free", "express shipping", "next day delivery",
                "delivery times", "shipping options", "how long to ship", "courier",
                "postage costs", "do you ship abroad", "delivery fee",
            ],
            "tr": [
                "kargo", "teslimat", "gönderim", "kargo ücreti", "kargo kaç gün sürer",
                "teslimat ne kadar sürer", "kargo bedava mı", "ücretsiz kargo",
                "hangi kargo ile gönderiyorsunuz", "yurt dışına kargo", "kargo fiyatı",
                "teslimat süresi", "hızlı kargo", "kac gunde gelir", "kargo ucreti ne kadar",
                "kargo masrafı", "gönderim ücreti", "hangi ülkelere gönderim",
            ],
            "lv": [
                "piegāde", "piegādes", "sūtīšana", "piegādes cena", "cik maksā piegāde",
                "cik ilgi notiek piegāde", "piegādes laiks", "bezmaksas piegāde",
                "vai piegādājat uz ārzemēm", "uz kurām valstīm sūtāt", "kurjers",
                "piegādes izmaksas", "ātrā piegāde", "piegades cena", "cik dienās piegādā",
                "piegādes veidi", "pakomāts", "vai sūtāt uz Igauniju",
            ],
        },
    },
    "returns": {
        "kind": "article",
        "answer": {"en": "", "lv": "", "tr": ""},
        "phrases": {
            "en": [
                "return", "returns", "refund", "send back", "exchange", "money back",
                "how do i return an item", "return policy", "can i return this",
                "i want a refund", "when will i get my refund", "exchange for another size",
                "it doesn't fit, can i send it back", "return an order", "refund status",
                "how long does a refund take", "swap for a different colour", "return label",
                "i want my money back",
            ],
            "tr": [
                "iade", "değişim", "geri ödeme", "iade nasıl yapılır", "ürünü iade etmek",
                "iade etmek istiyorum", "para iadesi", "ücret iadesi", "iade süresi",
                "iade politikası", "ürünü değiştirmek istiyorum", "beden değişimi",
                "geri göndermek", "iade kargo", "param ne zaman yatar", "iade sartlari",
                "urunu iade", "olmadı değiştirmek istiyorum",
            ],
            "lv": [
                "atgriešana", "atgriezt", "atmaksa", "kā atgriezt preci", "preces atgriešana",
                "naudas atmaksa", "gribu atgriezt", "atgriešanas noteikumi", "apmainīt preci",
                "cita izmēra apmaiņa", "atdot atpakaļ", "nauda atpakaļ", "kad atmaksās naudu",
                "neder, gribu apmainīt", "atgriezt pasūtījumu", "atgriesana", "atmaksat naudu",
            ],
        },
    },
    "points_balance": {
        "kind": "registered",
        "answer": {"en": "", "lv": "", "tr": ""},
        "phrases": {
            "en": [
                "points balance", "how many points", "my points", "loyalty points",
                "how many points do i have", "check my points", "reward points",
                "my loyalty balance", "points left", "how many bonus points",
                "what's my points balance", "loyalty account",
            ],
            "tr": [
                "puanım", "puanlarım", "kaç puanım var", "puan bakiyesi", "sadakat puanı",
                "puan durumu", "biriken puanlarım", "bonus puan", "puanlarımı göster",
                "ne kadar puanım var", "puan bakiyem",
            ],
            "lv": [
                "punkti", "mani punkti", "cik man ir punktu", "punktu atlikums",
                "lojalitātes punkti", "bonusa punkti", "cik punktu esmu sakrājis",
                "punktu bilance", "krātie punkti", "parādiet manus punktus",
            ],
        },
    },
    "recommendations": {
        "kind": "registered",
        "answer": {"en": "", "lv": "", "tr": ""},
        "phrases": {
            "en": [
                "recommend", "recommendation", "suggest something", "what should i buy",
                "gift ideas", "what do you recommend", "any suggestions", "best sellers",
                "popular products", "gift for my wife", "something for a birthday",
                "what's good", "help me choose", "ideas for a present",
            ],
            "tr": [
                "öneri", "ne önerirsiniz", "bana bir şey önerir misiniz", "ne almalıyım",
                "hediye önerisi", "tavsiye", "tavsiye eder misiniz", "en çok satanlar",
                "popüler ürünler", "doğum günü hediyesi", "ne alsam", "hediye fikri",
                "bir şey öner",
            ],
            "lv": [
                "ieteikums", "ko jūs iesakāt", "ieteiciet kaut ko", "ko man nopirkt",
                "dāvanu idejas", "dāvana", "populārākās preces", "pārdotākās preces",
                "ko ieteiktu", "palīdziet izvēlēties", "dāvana dzimšanas dienā", "iesakiet",
            ],
        },
    },
    "greeting": {
        "kind": "answer",
        "answer": {
            "en": "Hello{name_sep}! Ask me about your order, delivery or returns, or say \"agent\" to talk to a person.",
            "tr": "Merhaba! Siparişiniz, kargo veya iade hakkında sorabilirsiniz; bir kişiyle görüşmek için \"temsilci\" yazın.",
            "lv": "Sveiki! Jautājiet par pasūtījumu, piegādi vai atgriešanu, vai uzrakstiet \"konsultants\", lai runātu ar cilvēku.",
        },
        "phrases": {
            "en": ["hello", "hi there", "good morning", "hey", "hi", "good afternoon", "yo", "hey hi"],
            "tr": ["merhaba", "selam", "selamlar", "günaydın", "iyi akşamlar", "mrb", "slm", "merhabalar"],
            "lv": ["sveiki", "labdien", "labrīt", "sveiks", "čau", "labvakar", "sveika", "hei"],
        },
    },
    "handoff": {
        "kind": "handoff",
        "answer": {"en": "", "lv": "", "tr": ""},
        "phrases": {
            "en": [
                "talk to a human", "speak to a person", "real person please", "live agent",
                "customer service", "i want to talk to someone", "representative",
                "this is unacceptable", "i am very angry", "terrible service", "worst shop ever",
                "you are scammers", "i'm furious", "charged twice", "you took my money twice", "money taken from my account",
                "double charged", "payment failed but money taken", "my card was charged",
                "payment problem", "card declined", "wrong amount charged", "urgent",
                "emergency, help now", "asap please", "i need help immediately",
                "i will report you", "fraud",
            ],
            "tr": [
                "insanla konuşmak istiyorum", "müşteri temsilcisi", "temsilciye bağlayın",
                "canlı destek", "yetkiliyle görüşmek istiyorum", "gerçek biriyle konuşayım",
                "rezalet", "berbat hizmet", "çok sinirliyim", "dolandırıcılık",
                "şikayet edeceğim", "saçmalık bu", "iki kere ücret alındı",
                "kartımdan iki kez çekildi", "ödeme sorunu", "ödeme yaptım para gitti",
                "param çekildi", "kartım reddedildi", "acil", "acil yardım", "hemen dönün",
                "çok acil", "kızgınım",
            ],
            "lv": [
                "gribu runāt ar cilvēku", "konsultants", "savienojiet ar operatoru",
                "klientu apkalpošana", "dzīvs cilvēks", "gribu sazināties ar darbinieku",
                "briesmīgi", "šausmīgs serviss", "esmu dusmīgs", "krāpnieki", "nekaunība",
                "sūdzēšos", "nauda noņemta divreiz", "divreiz noņēma naudu", "maksājuma problēma",
                "samaksāju bet nekas", "karte noraidīta", "steidzami", "ļoti steidzami",
                "tūlīt vajag palīdzību", "nekavējoties", "esmu nikns",
            ],
        },
    },
}

HANDOFF_STEMS = [
    "human*", "agent*", "operator*", "person", "representative*", "cilvēk*", "cilvek*",
    "konsultant*", "insan*", "temsilci*", "canlı destek*", "canli destek*", "yetkili*",
]


def seed(apps, schema_editor):
    Article = apps.get_model("chat", "KnowledgeArticle")
    for data in ARTICLES:
        Article.objects.get_or_create(slug=data["slug"], language=data["language"], defaults=data)

    BotIntent = apps.get_model("chat", "BotIntent")
    for key, spec in INTENTS.items():
        for language, phrases in spec["phrases"].items():
            article = None
            slug = ARTICLE_FOR.get((key, language))
            if slug:
                article = Article.objects.filter(slug=slug, language=language).first()
            answer = spec["answer"][language].replace("{name_sep}", "")
            intent, created = BotIntent.objects.get_or_create(
                key=key,
                language=language,
                defaults={
                    "kind": spec["kind"],
                    "phrases": phrases,
                    "answer": answer,
                    "article": article,
                },
            )
            if not created:
                known = {str(p) for p in intent.phrases or []}
                intent.phrases = list(intent.phrases or []) + [p for p in phrases if p not in known]
                intent.save(update_fields=["phrases", "updated_at"])

    ChatSettings = apps.get_model("chat", "ChatSettings")
    for row in ChatSettings.objects.all():
        phrases = list(row.handoff_phrases or [])
        phrases += [p for p in HANDOFF_STEMS if p not in phrases]
        row.handoff_phrases = phrases
        row.save(update_fields=["handoff_phrases"])


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0012_botintent_updated_at"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
