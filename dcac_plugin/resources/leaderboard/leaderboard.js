(function(){
  function num(td){var v=td?td.getAttribute('data-v'):null;return v===null||v===''?null:parseFloat(v);}
  function sortTable(table,col,dir){
    var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
    var numeric=rows.some(function(r){return r.cells[col]&&r.cells[col].hasAttribute('data-v');});
    rows.sort(function(a,b){
      if(numeric){var x=num(a.cells[col]),y=num(b.cells[col]);
        if(x===null&&y===null)return 0;if(x===null)return 1;if(y===null)return -1;
        return dir==='ascending'?x-y:y-x;}
      var s=a.cells[col].textContent.trim().toLowerCase(),t=b.cells[col].textContent.trim().toLowerCase();
      return dir==='ascending'?s.localeCompare(t):t.localeCompare(s);});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      var a=th.querySelector('.arrow');
      if(i===col){th.setAttribute('aria-sort',dir);a.textContent=dir==='ascending'?'\u25B2':'\u25BC';}
      else{th.removeAttribute('aria-sort');a.textContent='';}});
  }
  var tables=document.querySelectorAll('table.lb');
  Array.prototype.forEach.call(tables,function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
      th.title='click to sort';
      th.addEventListener('click',function(){
        var numeric=Array.prototype.some.call(table.tBodies[0].rows,function(r){
          return r.cells[i]&&r.cells[i].hasAttribute('data-v');});
        var cur=th.getAttribute('aria-sort');
        var dir=cur?(cur==='ascending'?'descending':'ascending'):(numeric?'descending':'ascending');
        sortTable(table,i,dir);});});});
  var q=new URLSearchParams(window.location.search).get('sort');
  if(q){var p=q.split('.'),t=tables[parseInt(p[0],10)];
    if(t&&!isNaN(parseInt(p[1],10)))sortTable(t,parseInt(p[1],10),p[2]==='asc'?'ascending':'descending');}
  function openTarget(){
    var id=decodeURIComponent(window.location.hash.slice(1)),el=id&&document.getElementById(id);
    if(!el)return;var d=el.closest('details');if(d)d.open=true;el.scrollIntoView({block:'center'});}
  window.addEventListener('hashchange',openTarget);openTarget();
  document.body.setAttribute('data-ready','1');
})();
