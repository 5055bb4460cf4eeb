"""Word lists for the synthetic benchmark (fictitious people, places and facts)."""

FIRST_NAMES = (
    "Aldric", "Brenna", "Caspian", "Delphine", "Eamon", "Fenna", "Gideon", "Hesper", "Ilario",
    "Jorunn", "Kestrel", "Liora", "Magnus", "Nerys", "Orrin", "Perpetua", "Quillon", "Rosalind",
    "Soren", "Tamsin", "Ulric", "Veda", "Wystan", "Xanthe", "Yorick", "Zinnia", "Anselm",
    "Briony", "Corwin", "Dagny", "Evander", "Ffion", "Galen", "Honora", "Ivo", "Juniper",
    "Kaspar", "Linnea", "Marius", "Niamh", "Osric", "Pilar", "Rafferty", "Saoirse", "Thaddeus",
    "Undine", "Valerian", "Wren", "Ximena", "Yestin", "Zephyr", "Amara", "Bertil", "Clemence",
    "Dorian", "Elowen", "Florian", "Greer", "Hollis", "Isolde", "Jasper", "Katell", "Leander",
    "Mireille",
)

SURNAMES = (
    "Ashcombe", "Brightwater", "Carrow", "Dunmore", "Everleigh", "Fairholt", "Greymantle",
    "Hollowell", "Ingleby", "Jarrow", "Kettleby", "Larkspur", "Merriweather", "Nettlefold",
    "Oakhurst", "Penhallow", "Quenby", "Ravensworth", "Stonebridge", "Thistlewood", "Underhay",
    "Vantongeren", "Whitlock", "Yarborough", "Zellweg", "Amberley", "Blackthorn", "Coldridge",
    "Dewhurst", "Elmsworth", "Foxley", "Goldhawk", "Hartigan", "Ivesdale", "Juniperhill",
    "Kingsmere", "Lowther", "Mossgrove", "Northcott", "Ormsby", "Pendleford", "Rookwood",
    "Saltmarsh", "Tregarth", "Upwood", "Varley", "Winterbourne", "Aldenmoor", "Brackwell",
    "Cindervale", "Draycott", "Eastwick", "Fernsby", "Gallowmere", "Heathcote", "Ironside",
    "Kilbride", "Lockhart", "Marlowe", "Nightingale", "Otterburn", "Pryce", "Quarrington",
    "Redfern",
)

BIRTHPLACES = (
    "Port Callory", "Vellmouth", "Ashenford", "Duskwater", "Brindle Cove", "Kestmoor",
    "Harrowgate Vale", "Lunmere", "Saltcliff", "Orrendale", "Pellinore Bay", "Wyndhollow",
    "Tarnbrook", "Glenvarra", "Moorcastle", "Riverswick", "Cobblemarsh", "Eastmere",
    "Fallowdene", "Gildersby", "Hethermoor", "Irongate", "Juniper Falls", "Kilmarrow",
    "Larchmont Ridge", "Merrowby", "Northwold", "Oxenhall", "Quarry Heights", "Rosemarket",
    "Silverdell", "Thornwick", "Umberfield", "Vantry", "Westerholm", "Yarrowfield",
    "Zennor Point", "Amberlow", "Briarstone", "Coldharbour",
)

OCCUPATIONS = (
    "lighthouse keeper", "marine biologist", "violin maker", "glassblower", "cartographer",
    "beekeeper", "astronomer", "pastry chef", "bookbinder", "structural engineer",
    "wildlife photographer", "clockmaker", "translator", "archivist", "landscape architect",
    "puppeteer", "volcanologist", "ferry captain", "perfumer", "orchard farmer",
    "museum curator", "stonemason", "radio host", "cheesemaker", "tailor", "botanist",
    "sign language interpreter", "furniture restorer", "glaciologist", "kite designer",
    "street musician", "ceramic artist", "locksmith", "bridge inspector", "sommelier",
    "mountain guide",
)

FIELDS = (
    "marine biology", "medieval history", "applied mathematics", "architecture",
    "comparative literature", "chemical engineering", "music composition", "geology",
    "economics", "philosophy", "veterinary science", "astrophysics", "fine art", "linguistics",
    "nursing",
)

INSTITUTIONS = (
    "Halvern University", "the Royal Academy of Brindle", "Kestmoor College",
    "the Institute of Glenvarra", "Saltcliff Polytechnic", "Thornwick University",
    "the Northwold School of Arts", "Amberlow University", "Eastmere Technical College",
    "the University of Pellinore", "Rosemarket Conservatory", "Vantry State University",
)

RESIDENCES = (
    "Lisbon", "Oslo", "Montreal", "Kyoto", "Cape Town", "Valparaiso", "Edinburgh", "Hobart",
    "Ljubljana", "Tallinn", "Reykjavik", "Porto", "Bergen", "Vancouver", "Wellington",
    "Galway", "Krakow", "Seville", "Trieste", "Quebec City", "Bruges", "Salzburg", "Cork",
    "Adelaide", "Halifax", "Dunedin", "Tromso", "Lyon", "Bologna", "Ghent", "Aarhus", "Graz",
)

HOBBIES = (
    "restoring antique bicycles", "birdwatching at dawn", "playing the bagpipes",
    "growing giant pumpkins", "competitive crossword solving", "sea kayaking",
    "collecting vintage postcards", "building model ships", "baking sourdough bread",
    "amateur astronomy", "fencing", "knitting scarves for charity", "rock climbing",
    "writing haiku", "tending a rooftop garden", "playing chess by mail", "ice swimming",
    "making stained glass", "cave exploring", "training sheepdogs", "folk dancing",
    "restoring old radios", "calligraphy", "foraging for mushrooms", "long-distance cycling",
    "juggling", "carving wooden spoons", "collecting meteorites", "ballroom dancing",
    "brewing herbal tea",
)

FUN_FACTS = (
    "sailed alone across the Sarrow Sea", "won a regional pie-eating contest",
    "discovered a new species of moss", "met a wild lynx on a hiking trail",
    "spent a winter in a research hut on a glacier", "learned to whistle in three octaves",
    "built a treehouse with a working elevator", "recorded an album of lullabies for goats",
    "walked the entire coast of Glenvarra", "kept a diary every day for forty years",
    "rescued a stranded dolphin", "painted a mural twenty metres long",
    "rode a camel across a salt flat", "set a record for the longest kite flight",
    "grew a lemon tree from a single seed in a cellar", "taught a parrot to recite poetry",
    "found a Roman coin in a vegetable patch", "crossed a frozen lake on skates at night",
    "designed a board game played in twelve countries", "slept in a lighthouse for a month",
    "played a violin made of ice", "invented a folding umbrella for dogs",
    "photographed a total solar eclipse from a balloon", "ran a marathon in a suit of armour",
    "restored a steam locomotive", "wrote a novel on a typewriter found in an attic",
    "swam with manta rays", "hosted a dinner for one hundred strangers",
    "climbed the highest peak of Kestmoor twice in one day", "rebuilt a windmill by hand",
    "spoke at a conference on the history of buttons", "learned to sail from a retired pirate",
    "planted a forest of a thousand oaks", "survived three days lost in the Duskwater marshes",
    "composed a symphony for bicycle bells", "kept bees on the roof of a library",
    "built a telescope from spectacle lenses", "found a message in a bottle from 1952",
    "danced at a royal wedding", "mapped every tunnel under an old city",
)
