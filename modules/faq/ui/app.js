// Ricerca nelle domande frequenti: chiama GET /api/faq/search e mostra i risultati in ordine di rilevanza.
"use strict";
(function () {
  const base = location.pathname.replace(/ui\/.*$/, "");
  const form = document.getElementById("ricerca");
  const q = document.getElementById("q");
  const settore = document.getElementById("settore");
  const ente = document.getElementById("ente");
  const stato = document.getElementById("stato");
  const elenco = document.getElementById("elenco");
  const nomi = {};
  const etichette = { generale: "Generale", pensioni: "Pensioni", tributi: "Tributi", "sanità": "Sanità",
    lavoro: "Lavoro", turismo: "Turismo", anagrafe: "Anagrafe" };
  let ultima = 0;

  function opzione(select, value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    select.appendChild(o);
  }

  fetch(base + "filters").then(r => r.json()).then(f => {
    (f.sectors || []).forEach(s => opzione(settore, s, etichette[s] || s));
    (f.agencies || []).forEach(a => { nomi[a.code] = a.name; opzione(ente, a.code, a.name); });
  }).catch(() => {});

  // The highlights come from the server already escaped, with <mark> around the words found.
  function paragrafo(cls, html, text) {
    const p = document.createElement("p");
    p.className = cls;
    if (html) { p.innerHTML = html; } else { p.textContent = text; }
    return p;
  }

  function voci(lista, risultati) {
    lista.replaceChildren();
    risultati.forEach(r => {
      const li = document.createElement("li");
      li.className = "risultato";
      const h = document.createElement("h3");
      if (r.highlights && r.highlights.question) { h.innerHTML = r.highlights.question; } else { h.textContent = r.question; }
      li.appendChild(h);
      li.appendChild(paragrafo("risposta", null, r.answer));
      const chi = r.agency ? (nomi[r.agency] || r.agency) : "Rete Linea Amica";
      li.appendChild(paragrafo("info", null, (etichette[r.sector] || r.sector) + " · " + chi));
      lista.appendChild(li);
    });
  }

  function mostra(dati) {
    voci(elenco, dati.results);
    if (!dati.results.length) {
      stato.textContent = "Nessuna risposta trovata. Prova con altre parole o togli i filtri.";
      return;
    }
    stato.textContent = dati.total === 1 ? "1 risposta trovata." :
      dati.total + " risposte trovate" + (dati.total > dati.results.length ? ", le prime " + dati.results.length + "." : ".");
  }

  // An operator's screen (?operatore=<username>) follows the suggestions pushed when the operator answers a call.
  const operatore = new URLSearchParams(location.search).get("operatore");
  if (operatore && window.EventSource) {
    const sezione = document.getElementById("suggerimenti");
    const statoS = document.getElementById("stato-suggerimenti");
    const elencoS = document.getElementById("elenco-suggerimenti");
    sezione.hidden = false;
    statoS.textContent = "In attesa di una chiamata per " + operatore + "…";
    const flusso = new EventSource(base + "suggestions/stream?user=" + encodeURIComponent(operatore));
    flusso.addEventListener("ready", () => { sezione.dataset.pronto = "1"; });
    flusso.addEventListener("suggestions", e => {
      const s = JSON.parse(e.data);
      const chi = nomi[s.agency] || s.agency;
      statoS.textContent = "Chiamata risposta per " + chi + (s.ticket ? ", pratica " + s.ticket : "") + ": " +
        (s.entries.length ? s.entries.length + " risposte suggerite." : "nessun suggerimento.");
      voci(elencoS, s.entries);
    });
    flusso.onerror = () => { statoS.textContent = "Collegamento ai suggerimenti interrotto: nuovo tentativo in corso…"; };
  }

  function cerca() {
    const p = new URLSearchParams({ q: q.value.trim(), limit: "10" });
    if (settore.value) p.set("sector", settore.value);
    if (ente.value) p.set("agency", ente.value);
    const n = ++ultima;
    stato.textContent = "Ricerca in corso…";
    fetch(base + "search?" + p).then(r => r.json()).then(d => {
      if (n !== ultima) return; // a newer search is on its way
      if (d.error) { stato.textContent = "Ricerca non riuscita: " + d.error; elenco.replaceChildren(); return; }
      mostra(d);
    }).catch(() => { if (n === ultima) stato.textContent = "Il servizio non risponde: riprova tra poco."; });
  }

  form.addEventListener("submit", e => { e.preventDefault(); cerca(); });
  settore.addEventListener("change", cerca);
  ente.addEventListener("change", cerca);
})();
