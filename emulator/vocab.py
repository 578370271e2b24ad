"""Words the emulator builds orders from. Fixed lists rather than Faker: generation stays fast
(tens of microseconds an order) and a seed gives the same stream whatever is installed."""

from __future__ import annotations

FIRST_NAMES = (
    "Anna", "Boris", "Chen", "Dana", "Elif", "Farid", "Galina", "Hiro", "Ilya", "Jana", "Kemal", "Lena",
    "Maria", "Nikolai", "Olga", "Pavel", "Rina", "Sergei", "Tamar", "Umar", "Vera", "Yusuf", "Zoe",
    "Test", "Алексей", "Мария", "Дмитрий", "Екатерина", "Айгерим", "Нурлан", "Noa", "Avi",
)  # fmt: skip

LAST_NAMES = (
    "Ivanov", "Petrova", "Smirnov", "Kuznetsova", "Popov", "Sokolova", "Levi", "Cohen", "Mizrahi",
    "Nurlanov", "Akhmetova", "Wang", "Yilmaz", "Kaya", "Garcia", "Novak", "Testov", "Иванов",
    "Смирнова", "Кузнецов", "Попова", "Сейткали", "Абаев",
)  # fmt: skip

# (city, region, country calling code, zip length)
CITIES = (
    ("Kiryat Motzkin", "Kraiot", "972", 7),
    ("Haifa", "Haifa District", "972", 7),
    ("Tel Aviv", "Tel Aviv District", "972", 7),
    ("Moscow", "Moscow", "7", 6),
    ("Kazan", "Tatarstan", "7", 6),
    ("Novosibirsk", "Novosibirsk Oblast", "7", 6),
    ("Санкт-Петербург", "Ленинградская область", "7", 6),
    ("Екатеринбург", "Свердловская область", "7", 6),
    ("Almaty", "Almaty Region", "7", 6),
    ("Astana", "Akmola Region", "7", 6),
    ("Minsk", "Minsk Region", "375", 6),
    ("Yerevan", "Yerevan", "374", 4),
    ("Tashkent", "Tashkent Region", "998", 6),
    ("Bishkek", "Chuy Region", "996", 6),
)

STREETS = (
    "Ploshad Mira", "Lenina", "Herzl", "Ben Yehuda", "Abay Ave", "Tverskaya", "Nevsky Prospekt",
    "Gagarina", "Sadovaya", "Dizengoff", "Rothschild Blvd", "Pushkina", "Shevchenko", "Mira Ave",
    "ул. Ленина", "пр. Мира", "ул. Садовая", "ул. Гагарина",
)  # fmt: skip

EMAIL_DOMAINS = ("gmail.com", "mail.ru", "yandex.ru", "outlook.com", "proton.me", "walla.co.il", "inbox.kz")

# Latin transliteration for e-mail local parts (the `email` format is ASCII).
TRANSLIT = str.maketrans({
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z", "и": "i",
    "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "sch", "ъ": "", "ы": "y",
    "ь": "", "э": "e", "ю": "yu", "я": "ya",
})  # fmt: skip

PRODUCTS = (
    "Mascaras", "Lipstick", "Face cream", "Shampoo", "T-shirt", "Jeans", "Sneakers", "Backpack",
    "Phone case", "USB-C cable", "Headphones", "Mug", "Frying pan", "Bed sheets", "Towel set",
    "Notebook", "Pencil set", "Board game", "Yoga mat", "Water bottle", "Sunglasses", "Wrist watch",
    "Платье", "Куртка", "Шарф", "Кроссовки", "Чайник",
)  # fmt: skip

BRANDS = (
    "Vivienne Sabo", "Maybelline", "L'Oreal", "Nivea", "Adidas", "Nike", "Puma", "Levi's", "Xiaomi",
    "Samsung", "Baseus", "Tefal", "IKEA", "Zara", "Gloria Jeans", "Befree", "Casio", "Ray-Ban",
)  # fmt: skip

SIZES = ("0", "XS", "S", "M", "L", "XL", "XXL", "36", "38", "40", "42", "44", "46", "one size")
SALES = (0, 0, 0, 5, 10, 15, 20, 25, 30, 40, 50)
ITEM_STATUSES = (200, 201, 202, 203, 204, 205, 206, 207)  # in the order an item goes through them
ENTRIES = ("WBIL", "WBRU", "WBKZ", "WBBY")
CURRENCIES = ("USD", "RUB", "KZT", "EUR", "ILS")
PROVIDERS = ("wbpay", "yookassa", "cloudpayments", "kaspi")
BANKS = ("alpha", "sber", "tinkoff", "vtb", "halyk", "leumi", "hapoalim")
DELIVERY_SERVICES = ("meest", "cdek", "boxberry", "dhl", "wb-courier")
LOCALES = ("en", "ru", "kk", "he", "hy", "uz")
