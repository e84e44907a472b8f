"""An original sentence bank written for mmfer's sample corpus.

An utterance is ``<opening>, <content>.``: the opening carries the emotion in the wording (or is
neutral), the content clause is everyday and neutral. Avoid digits: eSpeak reads them as several words.
"""

from __future__ import annotations

OPENINGS: dict[str, list[str]] = {
    "ang": [
        "This is completely unacceptable", "I am furious about this", "Don't you dare lie to me",
        "I'm sick and tired of this", "How dare you do this to me", "You never listen to a word I say",
        "Stop wasting my time", "That is absolutely outrageous", "I can't stand this any longer",
        "You ruined everything again", "This is ridiculous and insulting", "Who do you think you are",
        "Enough is enough", "I hate it when you do that", "Get your act together right now",
        "You had one job and you failed", "I'm so angry I could scream", "Don't you walk away from me",
    ],
    "hap": [
        "This is wonderful news", "I'm so happy for you", "What a lovely surprise", "That's fantastic",
        "I absolutely love it", "We finally did it", "This made my whole day", "I can't stop smiling",
        "Oh, that's brilliant", "You're the best friend ever", "How exciting is that",
        "Everything worked out perfectly", "I'm thrilled to bits", "What a beautiful morning",
        "Best news I've heard all year", "I'm over the moon", "That's the sweetest thing",
        "We're going to have so much fun",
    ],
    "sad": [
        "I miss her so much", "I feel so alone these days", "Nothing seems to matter anymore",
        "It breaks my heart", "I wish things were different", "I'm so sorry for your loss",
        "We lost everything we had", "I can't stop crying", "He's never coming back",
        "It just hurts too much", "I feel empty inside", "Nobody remembered my birthday",
        "I don't think I can go on like this", "All our plans fell apart", "I'm so tired of being lonely",
        "She didn't even say goodbye", "Everything reminds me of him", "I let everyone down",
    ],
    "neu": [
        "Just so you know", "For the record", "Okay, so", "Let me check", "As I said earlier",
        "By the way", "Well", "Right", "I think", "Apparently", "As far as I can tell",
        "According to the schedule", "If I remember correctly", "Just a reminder", "To be clear",
        "In any case", "From what I heard", "So basically",
    ],
    "fru": [
        "Why does this keep happening", "I've explained this three times already", "This is going nowhere",
        "Nothing ever works around here", "I give up trying to fix it", "Can we please just move on",
    ],
}
OPENINGS["exc"] = [
    "Oh my goodness, this is amazing", "I can hardly wait", "This is the best day ever", "Yes, we made it",
    "I'm bursting with excitement", "Wow, look at that",
]

CONTENT = [
    "the meeting moved to Tuesday", "the train leaves at nine", "the report is on your desk",
    "we need two more chairs", "the store closes at six", "my brother called this morning",
    "the package arrived yesterday", "the keys are in the drawer", "the bus stops at the corner",
    "the garden needs watering", "the lecture starts after lunch", "the printer is on the second floor",
    "the tickets are in my bag", "the kitchen was painted blue", "the neighbours bought a new car",
    "the library opens on Monday", "the coffee machine is next to the door", "the form goes to the office",
    "the dog sleeps in the hallway", "the flight lands in the evening", "we talked about the budget",
    "the window faces the street", "the letter came this afternoon", "the shop sells fresh bread",
    "the car is parked outside", "we moved the table to the kitchen", "the class has a new teacher",
    "the station is a short walk away", "the lights are on a timer", "the file is in the shared folder",
    "the painter comes on Thursday", "my sister lives near the river", "the results come out next week",
    "the market is open on weekends", "the door code has changed", "we ordered the blue curtains",
    "the phone is charging upstairs", "the doctor moved her appointment", "the hotel is by the harbour",
    "the recipe needs two eggs",
]
