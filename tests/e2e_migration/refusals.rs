//! Every refusal of §6, with the ldm CLI's kind of sentence, and nothing changed on either side.
